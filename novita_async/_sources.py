"""Reading what a caller hands to ``upload_asset``, and naming its image type from its bytes.

A path is read only if it names a regular file (:func:`open_regular`): a FIFO, a directory or a
device is refused before it is opened, since opening a FIFO waits for a writer, for ever if none
comes, and opening a device can have effects of its own. The batch runner reads its inputs the
same way.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO, Protocol, runtime_checkable

import anyio

from ._exceptions import ValidationError

__all__ = [
    "AsyncReadable",
    "NotRegularFileError",
    "UploadSource",
    "check_regular",
    "open_regular",
    "read_source",
    "sniff_content_type",
]

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


class NotRegularFileError(Exception):
    """Internal: ``path`` names something other than a regular file, namely ``kind``."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        super().__init__(f"{path!r} is not a regular file ({kind})")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str | None:
    """None for a regular file, else what the file is."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


def check_regular(path: str) -> os.stat_result:
    """``path``'s stat (following links); :class:`NotRegularFileError` unless a regular file."""
    info = os.stat(path)
    if (kind := _kind(info.st_mode)) is not None:
        raise NotRegularFileError(path, kind)
    return info


# Opened non-blocking: should the path become a FIFO between the stat and the open, the open
# returns at once and the descriptor's own stat refuses it.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def open_regular(path: str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file; :class:`NotRegularFileError` if it
    is not (checked before it is opened), ``OSError`` if it cannot be opened. Blocking."""
    check_regular(path)
    fd = os.open(path, _READ_FLAGS)
    try:
        if (kind := _kind(os.fstat(fd).st_mode)) is not None:
            raise NotRegularFileError(path, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(path: str) -> bytes:
    with open_regular(path) as handle:
        return handle.read()


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
            data = await anyio.to_thread.run_sync(_read_regular, path)
        except NotRegularFileError as exc:
            raise ValidationError(
                "source", path, f"must be a regular file, not {exc.kind}"
            ) from None
        except OSError as exc:
            raise ValidationError(
                "source", path, f"must be a readable file ({exc.strerror})"
            ) from exc
        return data, os.path.basename(path)
    if isinstance(source, AsyncReadable):
        data = await source.read()
        if not isinstance(data, bytes | bytearray):
            raise ValidationError("source", type(source).__name__, "read() must return bytes")
        return bytes(data), type(source).__name__
    raise ValidationError(
        "source", type(source).__name__, "must be a path, bytes or an object with async read()"
    )
