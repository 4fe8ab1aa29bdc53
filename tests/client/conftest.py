"""Fixtures for client tests: a real emulator on loopback, a client with fast retries, and a
small file system of its own to fill up or make read-only."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
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
