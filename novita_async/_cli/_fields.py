"""Shim: the names of this module moved (removed in Phase B)."""

from .._models import merge_fields
from ..batch._jobs import REQUEST_FIELDS, build_request

__all__ = ["REQUEST_FIELDS", "build_request", "merge_fields"]
