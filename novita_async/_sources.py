"""Reading what a caller hands to ``upload_asset``, and naming its image type from its bytes."""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import anyio

from ._exceptions import ValidationError

__all__ = ["AsyncReadable", "UploadSource", "read_source", "sniff_content_type"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@runtime_checkable
class AsyncReadable(Protocol):
    """Anything with ``async read()`` returning bytes (an aiofiles file, an anyio stream...)."""

    async def read(self, *args: Any) -> bytes: ...


UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncReadable


def sniff_content_type(data: bytes) -> str | None:
    """``image/png``, ``image/jpeg`` or ``image/webp`` from the magic bytes, else None."""
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    if data.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


async def read_source(source: UploadSource) -> tuple[bytes, str]:
    """The bytes of ``source`` and a short description of it for error messages.

    The whole asset is read: it is re-sent as it is if the upload has to be retried, and the
    service's assets are small images.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), f"<{len(source)} bytes>"
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            # Opened, read and closed in one worker-thread call: a cancellation cannot strand an
            # open file between an awaited open() and its close, as it can with aiofiles.open.
            return await anyio.Path(path).read_bytes(), os.path.basename(path)
        except OSError as exc:
            raise ValidationError(
                "source", path, f"must be a readable file ({exc.strerror})"
            ) from exc
    if isinstance(source, AsyncReadable):
        data = await source.read()
        if not isinstance(data, bytes | bytearray):
            raise ValidationError("source", type(source).__name__, "read() must return bytes")
        return bytes(data), type(source).__name__
    raise ValidationError(
        "source", type(source).__name__, "must be a path, bytes or an object with async read()"
    )
