"""Every wait is bounded: a download has an overall deadline, and ``Retry-After`` is capped on
every route. The per-test timeouts only guard against a regression holding the suite for ever."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from novita_async import (
    APITimeoutError,
    InstantIDRequest,
    NovitaClient,
    RateLimitError,
    RetryPolicy,
    TaskResult,
    Timeouts,
)
from novita_async.emulator import Emulator

from .conftest import FAST_POLL, FAST_RETRY, EventLog

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time


@pytest.mark.timeout(60)  # with no overall deadline the trickle would hold the call for ever
@pytest.mark.emulator(image_size_bytes=1024 * 1024)
@pytest.mark.parametrize(
    "bandwidth", [0.5, 256 * 1024], ids=["a-byte-every-2s", "slow-body-on-disk"]
)
async def test_a_download_past_its_overall_deadline_times_out_after_the_policys_attempts(
    make_client: Callable[..., NovitaClient],
    emu: Emulator,
    face_png: Path,
    tmp_path: Path,
    events: EventLog,
    bandwidth: float,
) -> None:
    async with make_client(timeouts=Timeouts(download_total=0.5)) as client:
        asset = await client.upload_asset(face_png)
        task_id = await client.submit_instant_id(
            InstantIDRequest(
                prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset]
            )
        )
        result = await client.wait_for_task(task_id, poll=FAST_POLL)
        # A steady trickle never leaves the socket silent for sock_read (60 s): only the
        # overall deadline ends it.
        emu.faults.set("image", bandwidth=bandwidth)
        out = tmp_path / "out"
        with pytest.raises(APITimeoutError) as caught:
            await client.download_image(result.images[0], out / "0.png")
    assert caught.value.reason == "TIMEOUT"
    attempts = FAST_RETRY.attempts
    assert len(events.of("request", "image")) == attempts
    # Every attempt had its answer's status line: the body, not the connection, timed out.
    assert [e.status for e in events.of("response", "image")] == [200] * attempts
    assert [e.error for e in events.of("retry", "image")] == ["TIMEOUT"] * (attempts - 1)
    assert not out.exists() or list(out.iterdir()) == []


def test_downloads_have_an_overall_deadline_by_default() -> None:
    assert Timeouts().download_total == 300.0
    assert Timeouts().for_download().total == 300.0
    assert Timeouts(download_total=None).for_download().total is None


async def first_model(client: NovitaClient) -> Any:
    async for model in client.list_models():
        return model
    return None


@attrs.frozen
class RouteCalls:
    """One call for each route, with what it needs already made."""

    face: Path
    request: InstantIDRequest
    result: TaskResult
    dest: Path

    def call(self, client: NovitaClient, route: str) -> Awaitable[object]:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "upload": lambda: client.upload_asset(self.face),
            "submit": lambda: client.submit_instant_id(self.request),
            "result": lambda: client.get_task_result(self.result.task_id),
            "models": lambda: first_model(client),
            "image": lambda: client.download_image(self.result.images[0], self.dest),
        }
        return calls[route]()


@pytest.mark.timeout(60)  # a day's Retry-After honoured uncapped would hold the test for ever
@pytest.mark.parametrize("route", ["upload", "submit", "result", "models", "image"])
async def test_a_retry_after_of_a_day_waits_only_the_cap_on_every_route(
    make_client: Callable[..., NovitaClient],
    emu: Emulator,
    face_png: Path,
    tmp_path: Path,
    events: EventLog,
    route: str,
) -> None:
    async with make_client() as client:
        asset = await client.upload_asset(face_png)
        request = InstantIDRequest(
            prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset]
        )
        task_id = await client.submit_instant_id(request)
        result = await client.wait_for_task(task_id, poll=FAST_POLL)
        calls = RouteCalls(face_png, request, result, tmp_path / "0.png")
        events.clear()

        # Refused for good: each answer said a day; each retry waited the cap.
        emu.faults.set(route, rate_429=1, retry_after=86400)
        with pytest.raises(RateLimitError) as caught:
            await calls.call(client, route)
    assert caught.value.retry_after == 86400
    cap = FAST_RETRY.retry_after_cap
    assert [e.delay for e in events.of("retry", route)] == [cap] * (FAST_RETRY.attempts - 1)

    # Refused for a moment (``for_seconds``): a patient policy rides it out at the cap's pace.
    events.clear()
    patient = RetryPolicy(attempts=100, retry_after_cap=0.05)
    emu.faults.set(route, rate_429=1, retry_after=86400, for_seconds=0.2)
    async with make_client(retry=patient) as client:
        assert await calls.call(client, route) is not None
    retries = events.of("retry", route)
    assert retries
    assert all(e.status == 429 and e.delay == patient.retry_after_cap for e in retries)
