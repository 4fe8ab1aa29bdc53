"""The origins' listening sockets, and the outage that takes the API origin off the network.

During an outage the API origin is gone as a crashed service is: its listening socket is closed,
so a new connection is refused by the kernel ("connection refused"), and its open connections are
closed (a pooled connection reads end-of-file; an answer being written is lost). A request that
reaches it just as the outage begins is reset unanswered. The port stays bound meanwhile, without
listening, so that no other process can take it: a client meets a refusal, never another server.
After the outage's seconds (or when the faults are cleared) it listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket

import anyio
from aiohttp import web

from ._faults import Faults
from ._stats import StatsRecorder

__all__ = ["Listener", "bind_origins", "origin_url", "run_outages"]

_BACKLOG = 4096  # thousands of clients may connect at once; the kernel caps it at somaxconn
_REBIND_ATTEMPTS = 50  # a closed port is free again at once; this only outlasts a rare race


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_origins(host: str, port: int) -> list[socket.socket]:
    """The API on ``port``; assets and images on the next two ports if free, else any free."""
    sockets = [_bind(host, port)]
    try:
        for offset in (1, 2):
            try:
                sockets.append(_bind(host, port + offset if port else 0))
            except OSError:
                sockets.append(_bind(host, 0))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def origin_url(host: str, sock: socket.socket) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{sock.getsockname()[1]}"


class Listener:
    """One origin's site on its port, which can stop listening and listen again."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        self._runner = runner
        self._host, self._port = sock.getsockname()[:2]
        self._sock: socket.socket | None = sock
        self._site: web.SockSite | None = None

    async def start(self) -> None:
        """Listen (again, on the same port)."""
        sock, self._sock = self._sock, None
        if sock is None:
            sock = await self._rebind()
        try:
            site = web.SockSite(self._runner, sock, backlog=_BACKLOG)
            await site.start()
        except BaseException:
            sock.close()
            raise
        self._site = site

    async def _rebind(self) -> socket.socket:
        for _ in range(_REBIND_ATTEMPTS - 1):
            try:
                return _bind(self._host, self._port)
            except OSError:
                await anyio.sleep(0.1)
        return _bind(self._host, self._port)

    def release_port(self) -> None:
        """Close the socket holding the port while not listening (the emulator is closing)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    async def stop(self) -> None:
        """Close the listening socket and every open connection."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
            with contextlib.suppress(OSError):  # taken meanwhile: start() binds it again
                self._sock = _bind(self._host, self._port)
        server = self._runner.server
        for connection in server.connections if server is not None else ():
            connection.force_close()


async def run_outages(faults: Faults, stats: StatsRecorder, api: Listener) -> None:
    """Carry out the outages the faults call for, one after another, until cancelled."""
    try:
        while True:
            outage = await faults.next_outage()
            await api.stop()
            stats.outages += 1
            stats.changed()
            with anyio.move_on_after(outage.seconds):
                await faults.wait_outage_cut_short(outage)
            await api.start()
            faults.outage_ended(outage)
            stats.changed()
    finally:
        api.release_port()
