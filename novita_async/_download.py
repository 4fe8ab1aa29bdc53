"""Stream one image to disk: never whole in memory, never half-written, never with credentials.

The body streams, chunk by chunk as it arrives, through ``aiofiles`` (the package's one async
file-I/O library, see :mod:`._atomic`) to a temporary name in the target folder (same file
system); only then is it renamed over the target with :func:`os.replace`, so a file is whole or
absent after any crash of the process. (Like the batch journal by default, files are not fsynced:
surviving power loss is left to the file system.) Any failure, cancellation included, removes the
temporary file. A body shorter than its ``Content-Length`` is an :class:`APIConnectionError`; an
expired signed URL is an :class:`ImageURLExpiredError`; a body that is not an image is an
:class:`InvalidResponseError`, and no file is made for it. A file operation that fails (creating
the folder, opening, writing, closing or renaming the file: a full disk, a read-only file system,
a name too long) is a :class:`~._exceptions.LocalIOError`, never a network error, so it is not
retried. An error answer's ``Retry-After`` is kept on its error, as for API calls.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiofiles
import aiofiles.os
import aiohttp
import anyio
import yarl
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from ._atomic import local_io, temp_path_for, write_atomically
from ._exceptions import (
    APIConnectionError,
    APIError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    status_error,
)
from ._retry import parse_retry_after
from ._sources import sniff_content_type

__all__ = ["BUFFER_LIMIT", "CHUNK_SIZE", "download_to_file", "is_expired_answer"]

CHUNK_SIZE = 256 * 1024
BUFFER_LIMIT = 1024 * 1024
INLINE_LIMIT = 256 * 1024
_SNIFF_BYTES = 16
_MAX_REDIRECTS = 5
_ERROR_PREFIX = 4096

# What an S3-style object store answers for a presigned URL past its lifetime.
_EXPIRED_MARKERS = (b"Request has expired", b"<Code>AccessDenied</Code>")


def is_expired_answer(status: int, body: bytes) -> bool:
    return status == 403 and any(marker in body for marker in _EXPIRED_MARKERS)


async def download_to_file(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    client_timeout: aiohttp.ClientTimeout,
    on_status: Callable[[int], None],
    shown_url: str,
) -> int:
    """GET ``url`` into ``dest``; return the number of bytes written.

    Sends no ``Authorization`` (the session must carry no default credentials): a presigned URL
    rejects a request that carries one, and the key must never reach the object store.
    """
    async with session.get(
        # The URL is signed as it is: keep its encoding byte for byte (encoded=True).
        yarl.URL(url, encoded=True),
        timeout=client_timeout,
        allow_redirects=True,
        max_redirects=_MAX_REDIRECTS,
    ) as response:
        on_status(response.status)
        if response.status != 200:
            raise await _answer_error(response, shown_url)
        return await _write_body(response, dest, shown_url)


async def _answer_error(response: aiohttp.ClientResponse, shown_url: str) -> APIError:
    try:
        body = await response.content.read(_ERROR_PREFIX)
    except aiohttp.ClientError:
        body = b""
    if is_expired_answer(response.status, body):
        return ImageURLExpiredError(
            f"the image URL has expired; fetch the task result again (GET {shown_url})",
            method="GET",
            url=shown_url,
        )
    return status_error(
        response.status,
        body=body.decode("utf-8", "replace"),
        method="GET",
        url=shown_url,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


async def _write_body(response: aiohttp.ClientResponse, dest: Path, shown_url: str) -> int:
    # Without a Content-Encoding, Content-Length is the exact number of bytes we must receive.
    expected = None if response.headers.get("Content-Encoding") else response.content_length
    chunks = response.content.iter_chunked(CHUNK_SIZE)
    # Most images fit in BUFFER_LIMIT: those are checked, then written and renamed by one worker-
    # thread call. Streaming them through aiofiles costs a thread hop per operation (open, each
    # write, close, rename: measured ~0.3 ms more CPU per image in a batch). A larger body streams
    # to its file chunk by chunk, so memory stays bounded by BUFFER_LIMIT + CHUNK_SIZE.
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= BUFFER_LIMIT:
            _check_image(head, shown_url)
            return await _stream_to_file(head, chunks, expected, dest, shown_url)
    _check_length(len(head), expected, shown_url)
    _check_image(head, shown_url)
    if len(head) <= INLINE_LIMIT:
        # Measured on the benchmark machine: handing a small file to a worker thread costs more
        # CPU than writing it (BENCHMARKS.md's throughput scenario, one image per job).
        _write_whole(dest, head)
    else:
        # A worker-thread call runs to its end even if its caller is cancelled: never half-done.
        await anyio.to_thread.run_sync(_write_whole, dest, head)
    return len(head)


def _write_whole(dest: Path, data: bytearray) -> None:
    try:
        write_atomically(dest, (data,), fsync=False)
    except LocalIOError as error:
        if error.errno != errno.ENOENT:
            raise
        # The folder does not exist yet: made only then, not checked for every image.
        with local_io(f"writing image {dest.name}", dest):
            os.makedirs(dest.parent, exist_ok=True)
        write_atomically(dest, (data,), fsync=False)


def _check_length(written: int, expected: int | None, shown_url: str) -> None:
    if expected is not None and written != expected:
        raise APIConnectionError(
            f"image body truncated: got {written} of {expected} bytes (GET {shown_url})",
            method="GET",
            url=shown_url,
        )


def _check_image(head: bytes | bytearray, shown_url: str) -> None:
    # A gateway or captive portal can answer 200 with an HTML page: never save that as an image.
    if sniff_content_type(bytes(head[:_SNIFF_BYTES])) is None:
        raise InvalidResponseError(
            f"the image URL answered with something that is not a PNG, JPEG or WebP image "
            f"(GET {shown_url})",
            method="GET",
            url=shown_url,
        )


async def _stream_to_file(
    head: bytearray,
    chunks: AsyncIterator[bytes],
    expected: int | None,
    dest: Path,
    shown_url: str,
) -> int:
    tmp = temp_path_for(dest)
    doing = f"writing image {dest.name}"
    # aiofiles runs each file operation in a worker thread that a cancellation cannot stop, so
    # opening and closing are shielded: the handle is always closed and the temporary file always
    # removed. Only the file operations are under local_io: the body's own errors are the network's.
    with anyio.CancelScope(shield=True), local_io(doing, dest):
        out = await _create(tmp)
    try:
        try:
            with local_io(doing, dest):
                await out.write(head)
            written = len(head)
            async for chunk in chunks:
                with local_io(doing, dest):
                    await out.write(chunk)
                written += len(chunk)
            _check_length(written, expected, shown_url)
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


async def _create(path: str) -> AsyncBufferedIOBase:
    try:
        return await aiofiles.open(path, "xb")
    except FileNotFoundError:  # the folder does not exist yet
        await aiofiles.os.makedirs(os.path.dirname(path), exist_ok=True)
        return await aiofiles.open(path, "xb")
