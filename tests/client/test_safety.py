"""Credentials, logs and lifecycle: what must never leak, and what must always be closed."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import anyio
import anyio.lowlevel
import pytest

from novita_async import (
    APIConnectionError,
    BadRequestError,
    InstantIDRequest,
    NovitaClient,
    NovitaError,
    PermissionDeniedError,
    ServerError,
    SubmitOutcomeUnknownError,
)
from novita_async.emulator import Emulator

from .conftest import FAST_POLL, FAST_RETRY, EventLog

SECRET = "sk-live-SECRET-0123456789abcdef"


async def test_key_reaches_no_log_record_exception_or_event(
    make_client: Callable[..., NovitaClient],
    emu: Emulator,
    face_png: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    events: EventLog,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    async with make_client(api_key=SECRET) as client:
        outcome = await client.instant_id(
            InstantIDRequest(prompt="p", width=128, height=128),
            face_images=[face_png], ref_images=[face_png], out_dir=tmp_path / "o", poll=FAST_POLL,
        )  # fmt: skip
        for script in (["500"] * 3, ["html502"] * 3, ["truncate"] * 3):
            emu.faults.script("result", script)
            with pytest.raises(NovitaError) as result_error:
                await client.get_task_result(outcome.task_id)
            errors.append(result_error.value)
        asset = await client.upload_asset(face_png)
        emu.faults.script("submit", ["reset_after"])
        request = InstantIDRequest(
            prompt="p", face_image_assets_ids=[asset], ref_image_assets_ids=[asset]
        )
        with pytest.raises(NovitaError) as submit_error:
            await client.submit_instant_id(request)
        errors.append(submit_error.value)
        emu.faults.script("image", ["expire", "truncate", "truncate", "truncate"])
        with pytest.raises(NovitaError) as download_error:
            await client.download_images(outcome.result, tmp_path / "again")
        errors.append(download_error.value)

    assert {type(e) for e in errors} >= {ServerError, SubmitOutcomeUnknownError}
    assert any(isinstance(e, APIConnectionError) for e in errors)
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [str(getattr(e, "__cause__", "")) for e in errors]
    assert not [t for t in texts if SECRET in t]
    records = caplog.records
    assert any(r.name == "novita_async" for r in records)  # the client does log
    for record in records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.args)
    # Signed image URLs are logged and reported without their query strings.
    ours = [r.getMessage() for r in records if r.name == "novita_async"]
    assert not [m for m in ours if "?" in m]
    assert all("?" not in e.url for e in events)
    assert not [e for e in events if SECRET in repr(e)]
    assert emu.stats().unexpected_auth == 0


async def test_key_goes_to_the_asset_host_only_when_configured(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path
) -> None:
    async with make_client() as client:
        await client.upload_asset(face_png)
    assert emu.stats().unexpected_auth == 0
    async with make_client(send_auth_to_assets=True) as client:
        # The emulator, like the real asset host's contract, refuses a key it should not get.
        with pytest.raises(BadRequestError):
            await client.upload_asset(face_png)
    assert emu.stats().unexpected_auth == 1


async def test_user_session_is_used_and_left_open(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as session:
        async with make_client(session=session) as client:
            outcome = await client.instant_id(
                InstantIDRequest(prompt="p", width=128, height=128),
                face_images=[face_png], ref_images=[face_png], out_dir=tmp_path, poll=FAST_POLL,
            )  # fmt: skip
        assert not session.closed
        assert outcome.files
        async with session.get(f"{emu.base_url}/v3/model") as response:
            assert response.status in (200, 401, 403)


async def test_a_callers_session_carries_every_request_and_no_other_is_opened(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    # The documented seam (README, "Testing your code"): the caller's session, as it is.
    sent: list[str] = []

    async def on_request_start(
        _: object, __: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        sent.append(params.url.path)

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request_start)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        async with make_client(session=session) as client:
            outcome = await client.instant_id(
                InstantIDRequest(prompt="p", width=128, height=128),
                face_images=[face_png], ref_images=[face_png], out_dir=tmp_path, poll=FAST_POLL,
            )  # fmt: skip
            assert client._transport.own is None
        assert not session.closed
    stats = emu.stats()
    assert {"upload", "submit", "result", "image"} <= set(stats.requests)
    assert len(sent) == sum(stats.count(route) for route in stats.requests)
    assert outcome.files


async def test_user_session_with_credentials_never_lends_them_to_assets_or_images(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with make_client(session=session) as client:
            outcome = await client.instant_id(
                InstantIDRequest(prompt="p", width=128, height=128),
                face_images=[face_png], ref_images=[face_png], out_dir=tmp_path, poll=FAST_POLL,
            )  # fmt: skip
        assert not session.closed
    assert outcome.files
    assert emu.stats().unexpected_auth == 0


async def test_session_is_created_lazily_and_closed_on_exit(
    make_client: Callable[..., NovitaClient],
) -> None:
    client = make_client()
    assert client._transport.own is None  # nothing opened by construction
    async with client:
        async for _ in client.list_models(page_size=1):
            break
        session = client._transport.own
        assert session is not None and not session.closed
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_task_result("t")


async def test_cancelling_a_request_mid_flight_then_leaving_closes_everything(
    make_client: Callable[..., NovitaClient], emu: Emulator
) -> None:
    emu.faults.hold("result")
    async with make_client() as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(client.get_task_result, "t")
                while emu.stats().in_flight.get("result", 0) < 1:
                    await anyio.wait_all_tasks_blocked()
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
        assert scope.cancelled_caught
        session = client._transport.own
    emu.faults.release("result")
    assert session is not None and session.closed
    # An unclosed session or connector would warn here, and warnings are errors.
    gc.collect()


async def test_leaving_the_context_while_cancelled_still_closes(
    make_client: Callable[..., NovitaClient], emu: Emulator
) -> None:
    emu.faults.hold("result")
    client = make_client()
    with anyio.move_on_after(0.05):
        async with client:
            await client.get_task_result("t")  # parked until the deadline cancels it
    emu.faults.release("result")
    assert client._transport.own is None
    gc.collect()


async def test_one_client_serves_many_concurrent_coroutines(
    client: NovitaClient, emu: Emulator
) -> None:
    results: list[str] = []

    async def one(n: int) -> None:
        try:
            await client.get_task_result(f"missing-{n}")
        except NovitaError as exc:
            results.append(exc.reason)

    async with anyio.create_task_group() as group:
        for n in range(300):
            group.start_soon(one, n)
    assert results == ["TASK_NOT_FOUND"] * 300
    assert emu.stats().count("result") == 300


async def test_wrong_key_error_does_not_echo_the_key(
    make_client: Callable[..., NovitaClient],
) -> None:
    async with make_client(api_key=SECRET, retry=FAST_RETRY) as client:
        try:
            await client.get_task_result("t")
        except PermissionDeniedError as exc:  # when the emulator checks keys
            assert SECRET not in str(exc)
        except NovitaError as exc:
            assert SECRET not in str(exc)
