"""Helpers the tests share beyond fixtures, imported by name (``from support import ...``).

They live here, not in ``conftest.py``: several folders have a ``conftest.py`` of their own, and
``from conftest import`` would find whichever was imported last.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import selectors
import socketserver
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import attrs

__all__ = [
    "S3_SECRET",
    "S3Bucket",
    "SmallFileSystem",
    "VirtualTimeLoop",
    "create_bucket",
    "mount",
    "reap",
    "reaped",
    "s3_env",
]


def reap(process: subprocess.Popen[Any]) -> None:
    """Kill ``process`` if it still runs, wait for it and close its pipes: a test never leaves a
    child behind, whichever way it ends (a child left running fails a later test with a
    ``ResourceWarning``)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def reaped(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``with reaped(subprocess.Popen(...)) as process:``, :func:`reap` on leaving, every path."""
    try:
        yield process
    finally:
        reap(process)


_Server = TypeVar("_Server", bound=socketserver.BaseServer)


@contextlib.contextmanager
def served(server: _Server) -> Iterator[_Server]:
    """``server`` serving from a thread of its own until the block ends; then shut down, its
    thread joined and its socket closed."""
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class SmallFileSystem:
    """A tmpfs of ``SIZE`` bytes mounted at ``path``, to fill up or remount read-only."""

    SIZE = 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Take every free byte (new files can still be created, not written to)."""
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def read_only(self) -> None:
        # Permission bits do not stop root, who runs these tests in CI; a read-only mount does.
        mount("-o", "remount,ro", str(self.path))


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


# --- object storage (moto's S3 server on loopback) --------------------------------------------

S3_SECRET = "moto-secret-key-that-must-never-show-0x5EC"
"""The secret access key the tests' S3 credentials carry: no output may hold it."""


def s3_env(endpoint: str) -> dict[str, str]:
    """The variables obstore reads to reach ``endpoint`` (as a user would set them)."""
    return {
        "AWS_ACCESS_KEY_ID": "novita-test-key-id",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


@attrs.frozen
class S3Bucket:
    """A fresh bucket of ``s3_server``, looked at with boto3 (the tests' own S3 client)."""

    endpoint: str
    name: str
    env: dict[str, str]

    def url(self, prefix: str = "run") -> str:
        return f"s3://{self.name}/{prefix}"

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_SECRET,
        )

    def keys(self, prefix: str = "") -> list[str]:
        client = self._client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def get(self, key: str) -> bytes:
        body: bytes = self._client().get_object(Bucket=self.name, Key=key)["Body"].read()
        return body

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (as a wiped prefix leaves the bucket)."""
        client = self._client()
        for key in self.keys(prefix):
            client.delete_object(Bucket=self.name, Key=key)

    def etag(self, key: str) -> str:
        etag: str = self._client().head_object(Bucket=self.name, Key=key)["ETag"]
        return etag.strip('"')


def create_bucket(endpoint: str, name: str) -> S3Bucket:
    bucket = S3Bucket(endpoint, name, s3_env(endpoint))
    bucket._client().create_bucket(Bucket=name)
    return bucket


# --- virtual time ---------------------------------------------------------------------------

_T = TypeVar("_T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: it stands still while the loop works, and jumps to the
    next timer whenever nothing else can happen.

    Everything the package times (backoff, ``Retry-After``, eta-timed polls, outage pauses,
    deadlines, rate windows) and everything an in-loop emulator times (task durations, injected
    delays) reads this loop's clock, through anyio or aiohttp: a test run on it waits no real
    second for a timer, and a busy machine cannot make a poll land late, since work takes no
    time on this clock: only timers move it.

    The clock jumps only when the loop would otherwise sleep until its next timer and nothing
    is ready: no callback, no readable or writable socket (a request over loopback to an in-loop
    server is readable as soon as it is sent), and no work in a thread (the loop's executor,
    which aiofiles uses, and anyio's worker threads: see :func:`virtual_time_threads`). Anything
    else that could wake the loop (another process, a server in a thread such as moto's) is not
    seen: tests that use one do not run on this loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._start = super().time()
        self.skipped = 0.0
        """Seconds the clock jumped over (all the time it has moved)."""
        self.in_threads = 0
        self._selector = _WarpingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._start + self.skipped

    def run_in_executor(self, executor: Any, func: Callable[..., _T], *args: Any) -> Any:
        future = super().run_in_executor(executor, func, *args)
        self.in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: object) -> None:
        self.in_threads -= 1


class _WarpingSelector:
    """The loop's selector: the clock jumps over a sleep that nothing but its timer can end."""

    # A real look first: loopback delivery and a thread's wake-up of the loop take a moment of
    # real time; this bounds how early a jump could be taken, not any test's timing.
    SETTLE = 0.0005

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout <= 0:
            return self._selector.select(0)
        if self._loop.in_threads:
            # A thread's work takes no virtual time: wait for it in real time.
            return self._selector.select(timeout)
        events = self._selector.select(self.SETTLE)
        if events or self._loop.in_threads:
            return events
        if timeout is None:  # nothing timed: only I/O can wake the loop
            return self._selector.select(None)
        self._loop.skipped += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


def _counted_to_thread(run_sync: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    """anyio's ``to_thread.run_sync``, counting its calls in flight on a virtual-time loop."""

    @functools.wraps(run_sync)
    async def counted(*args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualTimeLoop):
            return await run_sync(*args, **kwargs)
        loop.in_threads += 1
        try:
            return await run_sync(*args, **kwargs)
        finally:
            loop.in_threads -= 1

    return counted


@contextlib.contextmanager
def virtual_time_threads() -> Iterator[None]:
    """While in effect, anyio's worker threads count as work in flight on a virtual-time loop."""
    original = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = _counted_to_thread(original)  # type: ignore[assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original  # type: ignore[assignment]
