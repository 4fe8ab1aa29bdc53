"""Failures against the emulator: retries, error mapping, submit safety, task outcomes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from novita_async import (
    APIConnectionError,
    BadRequestError,
    ClientEvent,
    ImageURLExpiredError,
    InstantIDRequest,
    NotFoundError,
    NovitaClient,
    PermissionDeniedError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskResult,
    TaskTimeoutError,
)
from novita_async.emulator import Emulator, EmulatorConfig

from .conftest import FAST_POLL, FAST_RETRY, EventLog

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time


async def ready_request(client: NovitaClient, face: Path, **fields: object) -> InstantIDRequest:
    asset = await client.upload_asset(face)
    return InstantIDRequest(
        prompt=str(fields.pop("prompt", "a portrait")),
        face_image_assets_ids=[asset],
        ref_image_assets_ids=[asset],
        **fields,  # type: ignore[arg-type]
    )


async def finished(client: NovitaClient, face: Path, **fields: object) -> TaskResult:
    task_id = await client.submit_instant_id(await ready_request(client, face, **fields))
    return await client.wait_for_task(task_id, poll=FAST_POLL)


# --- retries ------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path, events: EventLog
) -> None:
    async with make_client(retry=RetryPolicy(backoff_base=0.001, retry_after_cap=5)) as client:
        request = await ready_request(client, face_png)
        emu.faults.script("submit", ["429:1", "ok"])  # answered as "Retry-After: 1"
        assert await client.submit_instant_id(request)
    (retry,) = events.of("retry", "submit")
    assert (retry.status, retry.delay) == (429, 1.0)
    assert emu.stats().submissions == 1


async def test_429_retry_after_http_date_is_honoured_up_to_the_cap(
    client: NovitaClient, emu: Emulator, face_png: Path, events: EventLog
) -> None:
    request = await ready_request(client, face_png)
    # A date ~30 s ahead: parsed, then capped to FAST_RETRY.retry_after_cap.
    emu.faults.script("submit", ["429date:30", "ok"])
    assert await client.submit_instant_id(request)
    (retry,) = events.of("retry", "submit")
    assert retry.delay == FAST_RETRY.retry_after_cap
    assert emu.stats().submissions == 1


async def test_429_that_persists_surfaces_with_retry_after(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png)
    emu.faults.script("submit", ["429:0.01"] * 3)
    with pytest.raises(RateLimitError) as caught:
        await client.submit_instant_id(request)
    assert caught.value.status == 429
    assert caught.value.retry_after == 1.0  # the emulator rounds Retry-After up to whole seconds
    assert emu.stats().count("submit", 429) == 3
    assert emu.stats().submissions == 0


async def test_5xx_json_is_retried_then_surfaced_with_reason(
    client: NovitaClient, emu: Emulator, events: EventLog
) -> None:
    task_id = "no-such-task"
    emu.faults.script("result", ["500", "503", "500"])
    with pytest.raises(ServerError) as caught:
        await client.get_task_result(task_id)
    error = caught.value
    assert error.status == 500
    assert error.reason and error.reason != "HTTP_500"  # the body's reason, e.g. GET_RESULT_FAILED
    assert error.code == 500
    assert error.api_message
    assert emu.stats().count("result") == 3
    assert [e.attempt for e in events.of("retry", "result")] == [1, 2]
    assert len(events.of("error", "result")) == 1


async def test_html_5xx_is_retried_then_surfaced_as_server_error_not_a_decode_crash(
    client: NovitaClient, emu: Emulator
) -> None:
    emu.faults.script("result", ["html502", "html504", "html502"])
    with pytest.raises(ServerError) as caught:
        await client.get_task_result("t")
    assert caught.value.status == 502
    assert "Bad Gateway" in caught.value.body
    assert caught.value.reason == "HTTP_502"
    assert "Bad Gateway" in str(caught.value)


async def test_transient_5xx_then_success(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png)
    emu.faults.script("submit", ["html502", "500"])
    assert await client.submit_instant_id(request)
    assert emu.stats().submissions == 1
    assert emu.stats().duplicate_submissions == 0


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, task_base_seconds=0.02, image_mode="tiny",
                          api_keys={"good-key-0123456789"})  # fmt: skip


async def test_403_wrong_key_carries_code_reason_message(
    make_client: Callable[..., NovitaClient], emu: Emulator
) -> None:
    async with make_client(api_key="wrong-key-0123456789") as client:
        with pytest.raises(PermissionDeniedError) as caught:
            await client.get_task_result("t")
    error = caught.value
    assert (error.status, error.code, error.reason) == (403, 403, "INVALID_API_KEY")
    assert error.api_message
    assert isinstance(error.metadata, dict)
    assert "wrong-key-0123456789" not in str(error)
    assert emu.stats().count("result", 403) == 1  # not retried


async def test_400_and_404_carry_the_body(
    make_client: Callable[..., NovitaClient], emu: Emulator
) -> None:
    async with make_client(api_key="good-key-0123456789") as client:
        with pytest.raises(BadRequestError) as bad:
            await client.submit_instant_id(
                InstantIDRequest(
                    prompt="p", face_image_assets_ids=["nope"], ref_image_assets_ids=["nope"]
                )
            )
        with pytest.raises(NotFoundError) as missing:
            await client.get_task_result("does-not-exist")
    assert bad.value.status == 400 and bad.value.reason
    assert bad.value.metadata  # names the offending field
    assert missing.value.reason == "TASK_NOT_FOUND"
    assert emu.stats().count("submit") == 1


# --- submit safety ------------------------------------------------------------------------------


async def test_answer_lost_after_submit_is_not_retried(
    client: NovitaClient, emu: Emulator, face_png: Path, events: EventLog
) -> None:
    request = await ready_request(client, face_png)
    emu.faults.script("submit", ["reset_after"])
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit_instant_id(request)
    stats = emu.stats()
    assert stats.submissions == 1  # the task exists (and is billed) ...
    assert stats.count("submit") == 1  # ... and was not submitted again
    assert events.of("retry", "submit") == []


async def test_retry_unknown_submits_is_an_explicit_opt_in(
    make_client: Callable[..., NovitaClient], emu: Emulator, face_png: Path
) -> None:
    policy = RetryPolicy(attempts=3, backoff_base=0.001, retry_unknown_submits=True)
    async with make_client(retry=policy) as client:
        request = await ready_request(client, face_png)
        emu.faults.script("submit", ["reset_after", "ok"])
        assert await client.submit_instant_id(request)
    # The documented risk of opting in: the lost submission made a task too.
    assert emu.stats().submissions == 2
    assert emu.stats().duplicate_submissions == 1


async def test_reset_before_the_answer_on_submit_is_also_unknown(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png)
    emu.faults.script("submit", ["reset_before", "ok"])
    with pytest.raises(SubmitOutcomeUnknownError):
        # The client cannot tell a reset before processing from one after: it must not guess.
        await client.submit_instant_id(request)
    assert emu.stats().submissions == 0


async def test_connection_refused_is_a_connection_error(events: EventLog) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with NovitaClient(
        "k" * 20, base_url=f"http://127.0.0.1:{port}", retry=FAST_RETRY, on_event=events.append
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.get_task_result("t")
        with pytest.raises(APIConnectionError) as on_submit:
            await client.submit_instant_id(
                InstantIDRequest(
                    prompt="p", face_image_assets_ids=["a"], ref_image_assets_ids=["b"]
                )
            )
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)
    # Nothing reached a server, so even the submit was retried, and its outcome is known.
    assert not isinstance(on_submit.value, SubmitOutcomeUnknownError)
    assert len(events.of("request", "submit")) == FAST_RETRY.attempts


# --- tasks --------------------------------------------------------------------------------------


async def test_failed_task_raises_with_reason(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    emu.faults.fail_next_tasks(1, reason="no face in the reference image")
    request = await ready_request(client, face_png)
    task_id = await client.submit_instant_id(request)
    with pytest.raises(TaskFailedError) as caught:
        await client.wait_for_task(task_id, poll=FAST_POLL)
    assert caught.value.task_id == task_id
    assert caught.value.task_reason == "no face in the reference image"
    assert "no face" in str(caught.value)


async def test_wait_deadline_raises_task_timeout(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png, prompt="slow [[seconds:3600]]")
    task_id = await client.submit_instant_id(request)
    with pytest.raises(TaskTimeoutError) as caught:
        await client.wait_for_task(task_id, timeout=0.3, poll=FAST_POLL)
    assert caught.value.task_id == task_id
    assert caught.value.last_status in ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING")


async def test_wait_rides_out_transient_errors(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png)
    task_id = await client.submit_instant_id(request)
    emu.faults.script("result", ["500"] * 4)  # outlasts one call's 3 attempts
    result = await client.wait_for_task(task_id, poll=FAST_POLL)
    assert result.task_id == task_id


async def test_polls_about_twice_when_eta_is_honest(
    client: NovitaClient, emu: Emulator, face_png: Path
) -> None:
    request = await ready_request(client, face_png, prompt="p [[seconds:0.3]]")
    task_id = await client.submit_instant_id(request)
    before = emu.stats().count("result")
    # One poll right away (it learns the eta), one at eta + margin (the task is done).
    await client.wait_for_task(task_id, poll=PollPolicy(min_delay=0.01, margin=0.05))
    assert emu.stats().count("result") - before == 2


# --- images -------------------------------------------------------------------------------------


async def test_expired_url_is_refetched_once(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished(client, face_png)
    results_before = emu.stats().count("result")
    emu.faults.script("image", ["expire"])
    (path,) = await client.download_images(result, tmp_path)
    assert path.stat().st_size > 0
    stats = emu.stats()
    assert stats.count("image", 403) == 1
    assert stats.count("result") == results_before + 1


async def test_one_image_costs_at_most_attempts_times_one_plus_refreshes_gets(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path, events: EventLog
) -> None:
    # attempts=3, expired_url_refreshes=2: each URL is tried three times (two 503s then expired),
    # and the third URL fails three times: 3 * (1 + 2) = 9 GETs, then the last error.
    result = await finished(client, face_png)
    results_before = emu.stats().count("result")
    emu.faults.script("image", ["503", "503", "expire"] * 2 + ["503"] * 3 + ["ok"] * 3)
    seen: list[ClientEvent] = []
    with pytest.raises(ServerError):
        await client.download_images(result, tmp_path / "out", on_event=seen.append)
    policy = client.config.retry
    assert emu.stats().count("image") == policy.attempts * (1 + policy.expired_url_refreshes) == 9
    assert emu.stats().count("result") == results_before + 2
    assert not (tmp_path / "out").exists()
    # The call's own hook heard its retries (the renewals among them) and its failure.
    assert {e.kind for e in seen} == {"retry", "error"}
    refreshes = [e for e in seen if e.kind == "retry" and e.error == "IMAGE_URL_EXPIRED"]
    assert len(refreshes) == 2
    # Each URL's GETs end in an error: two expired (each renewed), then the last 503.
    errors = [e.error for e in seen if e.kind == "error"]
    assert errors == ["IMAGE_URL_EXPIRED", "IMAGE_URL_EXPIRED", "HTTP_503"]
    # The client's own hook is still called besides the call's.
    assert len(events.of("request", "image")) == 9


async def test_a_per_call_retry_policy_overrides_the_clients(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished(client, face_png)
    emu.faults.script("image", ["503"] * 5 + ["ok"])
    single = RetryPolicy(attempts=1, expired_url_refreshes=0)
    with pytest.raises(ServerError):
        await client.download_images(result, tmp_path, retry=single)
    assert emu.stats().count("image") == 1
    (path,) = await client.download_images(
        result, tmp_path, retry=RetryPolicy(attempts=6, backoff_base=0.0)
    )
    assert path.stat().st_size > 0
    assert emu.stats().count("image") == 1 + 5


async def test_expired_url_alone_raises(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished(client, face_png)
    emu.faults.script("image", ["expire"])
    with pytest.raises(ImageURLExpiredError):
        await client.download_image(result.images[0], tmp_path / "out" / "x.png")
    assert not (tmp_path / "out").exists()  # nothing created for a failed download
    assert emu.stats().count("image") == 1  # an expired URL is not retried


async def test_truncated_download_raises_and_leaves_no_file(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished(client, face_png)
    emu.faults.script("image", ["truncate"] * 3)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(APIConnectionError):
        await client.download_image(result.images[0], out / "0.png")
    assert list(out.iterdir()) == []
    assert emu.stats().count("image") == 3


async def test_truncated_download_is_retried(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path
) -> None:
    result = await finished(client, face_png)
    emu.faults.script("image", ["truncate"])
    path = await client.download_image(result.images[0], tmp_path / "0.png")
    assert path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png", "face.png"]  # noqa: ASYNC240


async def test_cancelled_download_leaves_no_partial_file(
    client: NovitaClient, emu: Emulator, face_png: Path, tmp_path: Path, events: EventLog
) -> None:
    result = await finished(client, face_png)
    emu.faults.set("image", bandwidth=1.0)  # one byte a second: the body never completes
    out = tmp_path / "out"
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(client.download_image, result.images[0], out / "0.png")
            # Cancel only once the answer's status line is in and its body is being read.
            while not events.of("response", "image"):
                await anyio.wait_all_tasks_blocked()
                await anyio.lowlevel.checkpoint()
            scope.cancel()
    assert scope.cancelled_caught
    assert not out.exists() or list(out.iterdir()) == []
