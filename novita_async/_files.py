"""The one file layer: whole-or-nothing writes and streams, appends, reads of regular files only,
image types and sizes from their bytes, an input image checked against an endpoint's limits, a
file's SHA-256, and the advisory lock.

A whole-file job is synchronous code its async caller runs in a worker thread (a cancelled caller
waits for it: no handle is left open); only a stream written as it arrives uses ``aiofiles``. A
written file appears whole or not at all (a temporary name carrying the writer's pid, then
:func:`os.replace`). A FIFO or device is refused before it is opened (opening a FIFO waits for a
writer, for ever). A write's ``OSError`` is :class:`~._exceptions.LocalIOError`, which no retry
repeats. A ``flock`` goes with its descriptor or process: a killed run leaves no folder locked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import stat
import struct
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import aiofiles
import aiofiles.os
import anyio

from ._exceptions import ConfigurationError, LocalIOError, ValidationError
from ._spec import InputLimits

try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is refused
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AsyncReadable", "ImageFacts", "ImageProblem", "NotRegularFileError", "UploadSource",
    "check_image", "check_image_bytes", "check_regular", "check_same_size", "file_digest",
    "image_facts", "image_file_facts", "image_size", "is_locked", "local_io", "lock_or_refuse",
    "open_regular", "read_source", "remove_stale_temp_files", "sniff_content_type",
    "stream_to_file", "temp_path_for", "write_all", "write_atomically",
]  # fmt: skip

# --- writing ----------------------------------------------------------------------------------

_temp_names = itertools.count()
_TEMP_NAME = re.compile(r"\..+\.(\d+)-\d+\.part")


@contextlib.contextmanager
def local_io(doing: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise an ``OSError`` of the block as :class:`LocalIOError` ("``doing`` failed: ...")."""
    try:
        yield
    except OSError as exc:
        raise LocalIOError.from_os_error(exc, doing, os.fspath(path)) from exc


def temp_path_for(dest: str | os.PathLike[str]) -> str:
    """A fresh hidden name next to ``dest``, so the final rename stays on one file system."""
    folder, name = os.path.split(os.fspath(dest))
    return os.path.join(folder, f".{name}.{os.getpid()}-{next(_temp_names)}.part")


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files that processes no longer alive left in ``folder`` (a ``kill
    -9`` mid-download); returns how many. A live writer's (this process's too) are left alone."""
    removed = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            if match is None or _alive(int(match[1])) or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would end the process there, not probe it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True


def write_atomically(
    dest: str | os.PathLike[str], chunks: Iterable[bytes | bytearray], *, fsync: bool = True
) -> None:
    """Write ``chunks`` to ``dest`` via a temporary file and :func:`os.replace`, blocking; on
    failure ``dest`` is left as it was. The mode is any new file's (0666 less the umask)."""
    tmp = temp_path_for(dest)
    try:
        with local_io(f"writing {os.path.basename(dest)}", dest):
            with open(tmp, "xb") as out:
                out.writelines(chunks)
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


async def stream_to_file(
    chunks: AsyncIterable[bytes | bytearray], dest: str | os.PathLike[str], *, doing: str
) -> int:
    """Write ``chunks`` to ``dest`` (its folder made if missing) as they arrive, whole or not at
    all; the bytes written. An error of ``chunks`` (the network's) is raised as it is. Opening
    and closing are shielded (aiofiles' worker thread cannot be cancelled): the handle is always
    closed, the temporary file removed."""
    tmp = temp_path_for(dest)
    with anyio.CancelScope(shield=True), local_io(doing, dest):
        try:
            out = await aiofiles.open(tmp, "xb")
        except FileNotFoundError:
            await aiofiles.os.makedirs(os.path.dirname(tmp), exist_ok=True)
            out = await aiofiles.open(tmp, "xb")
    written = 0
    try:
        try:
            async for chunk in chunks:
                with local_io(doing, dest):
                    await out.write(chunk)
                written += len(chunk)
        finally:
            with anyio.CancelScope(shield=True), local_io(doing, dest):
                await out.close()
        with local_io(doing, dest):
            await aiofiles.os.replace(tmp, dest)
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
            await aiofiles.os.remove(tmp)
        raise
    return written


def write_all(
    fd: int, data: bytes | bytearray, *, path: str | os.PathLike[str] | None = None
) -> None:
    """Append all of ``data`` to ``fd`` (an ``O_APPEND`` descriptor only this process writes
    to), or none of it: a part written before the disk filled is cut off again, so the next
    record does not join a torn one. ``path`` names the file in the error."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if written := len(data) - len(view):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
        if path is None:
            raise LocalIOError.from_os_error(exc, "appending a record", f"descriptor {fd}") from exc
        shown = os.fspath(path)
        raise LocalIOError.from_os_error(exc, f"writing {os.path.basename(shown)}", shown) from exc


# --- reading ----------------------------------------------------------------------------------


@runtime_checkable
class AsyncReadable(Protocol):
    """Anything with ``async read()`` returning bytes (an aiofiles file, an anyio stream...)."""

    async def read(self, *args: Any) -> bytes: ...


UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncReadable


def sniff_content_type(data: bytes) -> str | None:
    """``image/png``, ``image/jpeg`` or ``image/webp`` from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
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


def _refuse_special(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, next((k for t, k in _KINDS if t(mode)), "a special file"))


def check_regular(path: str) -> os.stat_result:
    """``path``'s stat (following links); :class:`NotRegularFileError` unless a regular file."""
    info = os.stat(path)
    _refuse_special(path, info.st_mode)
    return info


# Opened non-blocking: should the path become a FIFO between the stat and the open, the open
# returns at once and the descriptor's own stat refuses it.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def open_regular(path: str) -> io.BufferedReader:
    """``path`` opened for reading if a regular file (checked before it is opened, and again on
    the descriptor); :class:`NotRegularFileError` if not, ``OSError`` if unopenable. Blocking."""
    check_regular(path)
    fd = os.open(path, _READ_FLAGS)
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(path: str) -> bytes:
    with open_regular(path) as handle:
        return handle.read()


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """The size and SHA-256 (hex) of the file at ``path``; blocking."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        return handle.tell(), digest.hexdigest()


async def read_source(source: UploadSource) -> tuple[bytes, str]:
    """The bytes of ``source`` (read whole: a retried upload re-sends them) and a short
    description of it for error messages; :class:`ValidationError` if it cannot be read."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), f"<{len(source)} bytes>"
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:  # one worker-thread call: a cancellation cannot strand an open file
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


# --- images -----------------------------------------------------------------------------------

# ``read(offset, count)``: up to ``count`` bytes at ``offset``, of bytes in memory or of a file.
# The size parsers take this rather than the bytes, so that a file's size is read from its
# header without the file being read whole (a JPEG's frame can come after long metadata).
_Read = Callable[[int, int], bytes]


def image_size(data: bytes) -> tuple[int, int] | None:
    """The width and height a PNG, JPEG or WebP file's header gives, else None."""
    return _image_size(lambda at, count: data[at : at + count])


def _image_size(read: _Read) -> tuple[int, int] | None:
    head = read(0, 30)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(read)
    if len(head) >= 30 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        chunk = head[12:16]
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", head[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            width = int.from_bytes(head[24:27], "little") + 1
            height = int.from_bytes(head[27:30], "little") + 1
            return width, height
    return None


# JPEG start-of-frame markers (C4, C8 and CC are other segments).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(read: _Read) -> tuple[int, int] | None:
    at = 2
    while len(segment := read(at, 9)) >= 4:
        if segment[0] != 0xFF:
            return None
        marker = segment[1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", segment[2:4])
        if marker in _SOF and len(segment) >= 9:
            height, width = struct.unpack(">HH", segment[5:9])
            return int(width), int(height)
        at += 2 + int(length)
    return None


class ImageFacts(NamedTuple):
    """What an input image's checks need, read once: never its content."""

    sha256: str
    nbytes: int
    content_type: str | None
    size: tuple[int, int] | None


def image_facts(data: bytes) -> ImageFacts:
    """The facts of an image in memory."""
    return ImageFacts(
        hashlib.sha256(data).hexdigest(), len(data), sniff_content_type(data), image_size(data)
    )


def image_file_facts(handle: io.BufferedReader) -> ImageFacts:
    """The facts of an open image file: its size from the header, its hash read in chunks (the
    file is never held whole); blocking."""

    def read(at: int, count: int) -> bytes:
        handle.seek(at)
        return handle.read(count)

    content_type, size = sniff_content_type(read(0, 16)), _image_size(read)
    handle.seek(0)
    digest = hashlib.file_digest(handle, "sha256")
    return ImageFacts(digest.hexdigest(), handle.tell(), content_type, size)


class ImageProblem(Exception):
    """Internal: an input image the endpoint would refuse. ``reason``: ``INVALID_IMAGE``,
    ``INPUT_TOO_LARGE`` or ``INPUT_SIZE_MISMATCH``; ``found``: what breaks the limit (``"10485761
    bytes"``, ``"4097x4096"``, or empty); ``allowed``: what the limit says. The client and the
    batch each say it their way, both with the input's name and never its content."""

    def __init__(self, reason: str, found: str, allowed: str) -> None:
        super().__init__(reason, found, allowed)
        self.reason, self.found, self.allowed = reason, found, allowed

    def shown(self, described: str) -> str:
        """``described`` (a path, ``<N bytes>``) with what was found in it."""
        return f"{described}: {self.found}" if self.found else described


def check_image_bytes(nbytes: int, limits: InputLimits) -> None:
    """:class:`ImageProblem` if ``nbytes`` exceed ``limits``: a file's stat size is checked by
    this before the file is read."""
    if nbytes > limits.max_bytes:
        raise ImageProblem(
            "INPUT_TOO_LARGE", f"{nbytes} bytes", f"must be at most {limits.max_bytes} bytes"
        )


def check_image(facts: ImageFacts, limits: InputLimits) -> tuple[int, int]:
    """The image's width and height, or :class:`ImageProblem` if the endpoint would refuse it:
    empty, not a PNG, JPEG or WebP, or outside ``limits``."""
    if not facts.nbytes:
        raise ImageProblem("INVALID_IMAGE", "", "must not be empty")
    if facts.content_type is None:
        raise ImageProblem("INVALID_IMAGE", "", "must be a PNG, JPEG or WebP image")
    check_image_bytes(facts.nbytes, limits)
    if facts.size is None:
        raise ImageProblem("INVALID_IMAGE", "", "has no width and height this client can read")
    width, height = facts.size
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise ImageProblem(
            "INPUT_TOO_LARGE", f"{width}x{height}", f"must have at most {limits.max_pixels} pixels"
        )
    if (limits.max_width is not None and width > limits.max_width) or (
        limits.max_height is not None and height > limits.max_height
    ):
        raise ImageProblem(
            "INPUT_TOO_LARGE",
            f"{width}x{height}",
            f"must be at most {limits.max_width}x{limits.max_height}",
        )
    return facts.size


def check_same_size(size: tuple[int, int], other: str, other_size: tuple[int, int]) -> None:
    """:class:`ImageProblem` unless ``size`` is ``other_size``, the size of input ``other`` (an
    inpainting mask has its image's resolution)."""
    if size != other_size:
        raise ImageProblem(
            "INPUT_SIZE_MISMATCH",
            f"{size[0]}x{size[1]}",
            f"must have the resolution of {other} ({other_size[0]}x{other_size[1]})",
        )


# --- locks ------------------------------------------------------------------------------------


def lock_or_refuse(fd: int, in_use: str) -> None:
    """Lock ``fd`` exclusively now, or raise :class:`ConfigurationError` saying ``in_use``."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigurationError(in_use) from None


def is_locked(path: Path) -> bool:
    """Whether a run holds ``path`` locked (a shared lock is refused while it does; ours, if
    granted, goes with the descriptor at once). A missing file is not locked."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_URL_LIKE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")


def looks_like_url(text: str) -> str | None:
    """The scheme of ``text`` if it reads as ``scheme:/...`` (a URL, or a mistyped one)."""
    match = _URL_LIKE.match(text)
    return match.group(1).lower() if match else None
