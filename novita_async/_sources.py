"""Shim: the names of this module moved (removed in Phase B)."""

from ._files import (
    AsyncReadable,
    NotRegularFileError,
    UploadSource,
    check_regular,
    open_regular,
    read_source,
    sniff_content_type,
)

__all__ = [
    "AsyncReadable",
    "NotRegularFileError",
    "UploadSource",
    "check_regular",
    "open_regular",
    "read_source",
    "sniff_content_type",
]
