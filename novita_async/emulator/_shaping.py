"""Bodies on the wire: streamed in chunks, slowed to a bandwidth, cut short, or reset."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator, Mapping

import anyio
import attrs
from aiohttp import web
from multidict import CIMultiDict

__all__ = ["BodySource", "StreamedAnswer", "reset_connection", "write_body"]

_CHUNK = 256 * 1024
_ZEROS = bytes(_CHUNK)


@attrs.frozen
class BodySource:
    """A body of ``length`` bytes: ``head`` followed by zero padding, produced chunk by chunk."""

    head: bytes = attrs.field(repr=False)
    length: int = attrs.field()

    @length.default
    def _length(self) -> int:
        return len(self.head)

    def chunks(self, size: int, limit: int) -> Iterator[bytes]:
        """Chunks of at most ``size`` bytes covering the first ``limit`` bytes of the body."""
        position = 0
        while position < limit:
            end = min(position + size, limit)
            if position < len(self.head):
                chunk = self.head[position : min(end, len(self.head))]
            else:
                chunk = _ZEROS[: end - position] if end - position < _CHUNK else _ZEROS
            position += len(chunk)
            yield chunk


class StreamedAnswer(web.StreamResponse):
    """A handler's answer whose body the fault layer writes (it may shape or cut it)."""

    def __init__(
        self, source: BodySource, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status=status, headers=headers)
        self.source = source


def reset_connection(request: web.BaseRequest) -> None:
    """Close the connection abruptly: an RST, with nothing of the answer sent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger 0 turns the close into a TCP reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def write_body(
    request: web.BaseRequest,
    answer: web.StreamResponse,
    source: BodySource,
    *,
    truncate: bool = False,
    bandwidth: float | None = None,
) -> tuple[web.StreamResponse, int]:
    """Send ``answer``'s status and headers, then ``source``; returns the bytes written.

    With ``truncate`` the full Content-Length is announced, half the body is sent and the
    connection is closed. With ``bandwidth`` the writes are paced to that many bytes per second.
    """
    headers = CIMultiDict(answer.headers)
    headers.popall("Content-Length", None)
    response = web.StreamResponse(status=answer.status, headers=headers)
    response.content_length = source.length
    await response.prepare(request)
    limit = max(0, min(source.length - 1, source.length // 2)) if truncate else source.length
    size = _CHUNK if bandwidth is None else max(1, min(_CHUNK, int(bandwidth / 20)))
    started = anyio.current_time()
    written = 0
    for chunk in source.chunks(size, limit):
        await response.write(chunk)
        written += len(chunk)
        if bandwidth is not None:
            # Pace against the start, so the average rate holds whatever the sleeps overshoot.
            await anyio.sleep(max(0.0, started + written / bandwidth - anyio.current_time()))
    if truncate:
        response.force_close()
        if request.transport is not None:
            request.transport.close()  # close, not abort: the partial body is flushed first
    else:
        await response.write_eof()
    return response, written
