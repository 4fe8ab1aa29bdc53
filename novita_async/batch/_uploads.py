"""Shim: the names of this module moved (removed in Phase B)."""

from ._inputs import AssetUploader, asset_endpoint

__all__ = ["AssetUploader", "asset_endpoint"]
