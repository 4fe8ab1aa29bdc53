"""Fixtures for client tests: a real emulator on loopback, a client with fast retries, and a
small file system of its own to fill up or make read-only."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from novita_async import (
    ClientEvent,
    InstantIDRequest,
    NovitaClient,
    PollPolicy,
    RetryPolicy,
    TaskResult,
)
from novita_async.emulator import Emulator, EmulatorConfig

# Retries as the defaults, but with waits short enough for tests.
FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.01, retry_after_cap=0.2)
FAST_POLL = PollPolicy(min_delay=0.01, max_delay=0.2, margin=0.01, initial_delay=0.01)


def image_bytes(kind: str = "PNG", size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 80)).save(buffer, format=kind)
    return buffer.getvalue()


@pytest.fixture
def face_png(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    path.write_bytes(image_bytes("PNG"))
    return path


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """``emu``'s configuration here (see tests/conftest.py)."""
    return EmulatorConfig(seed=7, task_base_seconds=0.02, image_mode="tiny")


@contextlib.asynccontextmanager
async def big_image_task(
    face_png: Path, size: int
) -> AsyncIterator[tuple[Emulator, NovitaClient, TaskResult]]:
    """An emulator serving images of ``size`` bytes, a client, and one finished task."""
    config = EmulatorConfig(seed=7, task_base_seconds=0.0, image_mode="tiny", image_size_bytes=size)
    async with (
        Emulator(config) as emu,
        NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as client,
    ):
        asset = await client.upload_asset(face_png)
        task_id = await client.submit_instant_id(
            InstantIDRequest(
                prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset]
            )
        )
        yield emu, client, await client.wait_for_task(task_id, poll=FAST_POLL)


class EventLog(list[ClientEvent]):
    def of(self, kind: str, route: str | None = None) -> list[ClientEvent]:
        return [e for e in self if e.kind == kind and (route is None or e.route == route)]


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def make_client(emu: Emulator, events: EventLog) -> Callable[..., NovitaClient]:
    def make(**overrides: Any) -> NovitaClient:
        options: dict[str, Any] = {
            "base_url": emu.base_url,
            "assets_url": emu.assets_url,
            "retry": FAST_RETRY,
            "on_event": events.append,
        }
        options.update(overrides)
        return NovitaClient(options.pop("api_key", emu.api_key), **options)

    return make


@pytest.fixture
async def client(make_client: Callable[..., NovitaClient]) -> AsyncIterator[NovitaClient]:
    async with make_client() as novita:
        yield novita


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
        _mount("-o", "remount,ro", str(self.path))


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFileSystem]:
    """A real file system that runs out of space (skipped where tmpfs cannot be mounted)."""
    path = tmp_path / "small"
    path.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mounted = _mount("-t", "tmpfs", "-o", f"size={SmallFileSystem.SIZE}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallFileSystem(path)
    finally:
        # Fails (EBUSY) if a test left a file open on it: that is a leak worth seeing.
        subprocess.run(["umount", str(path)], check=True)
