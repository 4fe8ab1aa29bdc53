"""Shim: the names of this module moved (removed in Phase B)."""

from ._jobs import JobSource

__all__ = ["JobSource"]
