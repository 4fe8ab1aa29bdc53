"""Fault injection on each route: every fault kind, scripts, seeding, holding."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import anyio
import attrs
import pytest
from emu_helpers import auth, body, finished_task, get_result, post_task, upload

from novita_async import _spec
from novita_async.emulator import AccountError, Emulator, EmulatorConfig, FaultSpec, Outage
from novita_async.emulator._cli import add_arguments, config_from_args

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

MODELS = "/v3/model"


async def _models_status(session: aiohttp.ClientSession, emu: Emulator) -> int:
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        await resp.read()
        return resp.status


async def test_json_5xx_answers_without_creating_a_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.script("submit", ["503", "500"])
    for expected, reason in ((503, "SERVICE_UNAVAILABLE"), (500, "CREATE_TASK_FAILED")):
        status, answer = await post_task(session, emu, body(face, face))
        assert status == expected
        assert answer["reason"] == reason
        assert set(answer) == {"code", "reason", "message", "metadata"}
    stats = emu.stats()
    assert stats.submissions == 0
    assert stats.faults == {"error_5xx": 2}


async def test_html_gateway_page(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.faults.set("models", FaultSpec(html_5xx=1.0))
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        assert resp.status in (502, 504)
        assert resp.content_type == "text/html"
        assert "<html>" in await resp.text()


async def test_429_with_retry_after_seconds(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.faults.set("models", FaultSpec(rate_429=1.0, retry_after=7))
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert (await resp.json())["reason"] == "RATE_LIMIT_EXCEEDED"


async def test_429_with_retry_after_http_date(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.set("models", FaultSpec(rate_429=1.0, retry_after=120, retry_after_http_date=1.0))
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        assert resp.status == 429
        when = parsedate_to_datetime(resp.headers["Retry-After"])
    assert resp.headers["Retry-After"].endswith("GMT")
    assert 60 < (when - datetime.now(UTC)).total_seconds() <= 121


async def test_reset_before_loses_the_request_and_creates_no_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.script("submit", ["reset"])
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_task(session, emu, body(face, face))
    stats = emu.stats()
    assert stats.submissions == 0
    assert stats.count("submit", "reset") == 1
    assert stats.tasks == {}


async def test_reset_after_creates_the_task_but_loses_the_answer(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.set("submit", FaultSpec(reset_after=1.0))
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_task(session, emu, body(face, face))
    stats = emu.stats()
    assert stats.submissions == 1
    assert sum(stats.tasks.values()) == 1
    assert stats.faults == {"reset_after": 1}


async def test_truncated_body_announces_more_than_it_sends(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    task_id = answer["task"]["task_id"]
    emu.faults.script("result", ["truncate"])
    url = emu.base_url + "/v3/async/task-result"
    async with session.get(url, params={"task_id": task_id}, headers=auth(emu)) as resp:
        assert resp.status == 200
        announced = int(resp.headers["Content-Length"])
        assert announced > 0
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emu.stats().count("result", "truncated") == 1
    # The next request is answered normally.
    status, again = await get_result(session, emu, task_id)
    assert status == 200 and again["task"]["status"] == _spec.STATUS_SUCCEED


async def test_truncated_image(session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig(task_base_seconds=0, image_mode="tiny", image_size_bytes=1_000_000)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        answer = await finished_task(session, emu, body(face, face))
        emu.faults.set("image", truncate=1.0)
        async with session.get(answer["images"][0]["image_url"]) as resp:
            assert resp.headers["Content-Length"] == "1000000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()


async def test_expire_fault_on_images(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    emu.faults.script("image", ["expire"])
    async with session.get(answer["images"][0]["image_url"]) as resp:
        assert resp.status == 403
        assert "Request has expired" in await resp.text()


async def test_latency_delays_the_answer(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.faults.set("models", FaultSpec(latency=0.2, jitter=0.05))
    started = anyio.current_time()
    assert await _models_status(session, emu) == 200
    # A lower bound: the injected sleep (on the virtual clock, up to a float's rounding).
    assert anyio.current_time() - started >= 0.2 - 1e-9


async def test_bandwidth_cap_slows_the_body(session: aiohttp.ClientSession) -> None:
    config = EmulatorConfig(task_base_seconds=0, image_mode="tiny", image_size_bytes=100_000)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        answer = await finished_task(session, emu, body(face, face))
        emu.faults.set("image", FaultSpec(bandwidth=400_000))
        started = anyio.current_time()
        async with session.get(answer["images"][0]["image_url"]) as resp:
            assert len(await resp.read()) == 100_000
        # 100 kB at 400 kB/s: the last chunk leaves after at least 80 kB / 400 kB/s.
        assert anyio.current_time() - started >= 0.2


@pytest.mark.emulator(image_mode="tiny")
async def test_a_trickle_sends_one_byte_per_interval(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    answer = await finished_task(session, emu, body(face, face))
    emu.faults.set("image", FaultSpec(bandwidth=20))  # one byte every 50 ms
    started = anyio.current_time()
    async with session.get(answer["images"][0]["image_url"]) as resp:
        assert resp.status == 200
        await resp.content.readexactly(5)
        resp.close()
    # 4 intervals between 5 bytes, exactly: on the virtual clock only the emulator's sleeps count.
    assert anyio.current_time() - started == pytest.approx(0.2)
    with anyio.fail_after(10):
        await emu.wait_stats(lambda s: s.count("image", "client_closed") == 1)


async def test_a_long_retry_after_for_a_time_window(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.set("submit", FaultSpec(rate_429=1.0, retry_after=86400, for_seconds=3600))
    url = emu.base_url + "/v3/async/instant-id"
    async with session.post(url, json=body(face, face), headers=auth(emu)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "86400"
    emu.faults.set("submit", rate_429=1.0, retry_after=86400, for_seconds=0.01)
    await anyio.sleep(0.01)  # the window's own length: it has lapsed after that
    assert (await post_task(session, emu, body(face, face)))[0] == 200
    assert emu.faults.get("submit") == FaultSpec()
    assert emu.stats().submissions == 1


async def test_scripted_sequence_then_back_to_normal(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.script("submit", ["500", "429", "reset", "ok"])
    assert emu.faults.pending("submit") == 4
    outcomes: list[object] = []
    for _ in range(5):
        try:
            outcomes.append((await post_task(session, emu, body(face, face)))[0])
        except aiohttp.ClientConnectionError:
            outcomes.append("reset")
    assert outcomes == [500, 429, "reset", 200, 200]
    assert emu.faults.pending("submit") == 0
    assert emu.stats().submissions == 2


async def test_seeded_faults_are_reproducible(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        spec = FaultSpec(error_5xx=0.3, rate_429=0.3)
        async with Emulator(EmulatorConfig(seed=seed, faults={"models": spec})) as emu:
            return [await _models_status(session, emu) for _ in range(30)]

    first = await statuses(11)
    assert first == await statuses(11)
    assert {200, 429} <= set(first) and set(first) & {500, 503}


async def test_hold_parks_requests_until_release(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.hold("models")
    answers: list[int] = []

    async def call() -> None:
        answers.append(await _models_status(session, emu))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(5):
            await emu.wait_in_flight("models", 1)
        assert answers == []
        emu.faults.release("models")
    assert answers == [200]


async def test_faults_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.base_url + "/__emulator/faults/models"
    async with session.post(url, json={"script": ["503"], "spec": {"latency": 0}}) as resp:
        assert resp.status == 200
        assert (await resp.json())["pending"] == 1
    assert await _models_status(session, emu) == 503
    async with session.post(url, json={"spec": {"error_5xx": 7}}) as resp:
        assert resp.status == 400
    async with session.delete(emu.base_url + "/__emulator/faults") as resp:
        assert resp.status == 200
    assert emu.faults.get("models") == FaultSpec()


def test_fault_spec_validation() -> None:
    with pytest.raises(ValueError):
        FaultSpec(error_5xx=0.7, reset=0.5)
    with pytest.raises(ValueError):
        FaultSpec(truncate=-0.1)
    with pytest.raises(ValueError):
        EmulatorConfig(faults={"upload-ish": FaultSpec()})
    with pytest.raises(ValueError):
        EmulatorConfig(fault_scripts={"submit": ["explode"]})
    assert FaultSpec.parse("error_5xx=0.05, reset_before=0.02") == FaultSpec(
        error_5xx=0.05, reset_before=0.02
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_fault_options_on_the_command_line() -> None:
    parser = _parser()
    ns = parser.parse_args([
        "--fault", "submit:error_5xx=0.05,reset_before=0.02",
        "--fault", "image:truncate=0.02,bandwidth=1000000",
        "--script", "result:503,429date",
        "--seed", "9", "--workers", "3", "--task-seconds", "0.5", "--image-url-ttl", "60",
        "--rate-limit", "5", "--image-mode", "tiny",
        "--asset-ttl", "30", "--asset-errors", "plain", "--drifted-model-flags",
    ])  # fmt: skip
    config = config_from_args(ns)
    assert (config.asset_ttl, config.asset_errors, config.drifted_model_flags) == (
        30.0, "plain", True,
    )  # fmt: skip
    assert config.faults["submit"] == FaultSpec(error_5xx=0.05, reset_before=0.02)
    assert config.faults["image"] == FaultSpec(truncate=0.02, bandwidth=1_000_000)
    assert config.fault_scripts == {"result": ("503", "429date")}
    assert (config.seed, config.workers, config.task_base_seconds) == (9, 3, 0.5)
    assert (config.image_url_ttl, config.rate_limit_per_second, config.image_mode) == (
        60,
        5.0,
        "tiny",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault", "nowhere:error_5xx=1"])


def test_the_options_are_the_config_fields_with_their_defaults() -> None:
    parser = _parser()
    untouched = parser.parse_args([])
    assert set(vars(untouched)) == {field.name for field in attrs.fields(EmulatorConfig)}
    assert config_from_args(untouched) == EmulatorConfig()
    shown = " ".join(parser.format_help().split())
    assert "--workers N tasks processed at once (default: 64)" in shown
    assert "--task-seconds X base duration of a task in seconds (default: 1.0)" in shown


def test_the_new_faults_on_the_command_line() -> None:
    parser = _parser()
    ns = parser.parse_args([
        "--account-error", "after=20,status=403,reason=INVALID_API_KEY,routes=submit+models",
        "--outage", "seconds=15,after=3",
        "--fault", "submit:rate_429=1,retry_after=86400,for_seconds=10",
        "--fault", "image:bandwidth=0.5",
        "--script", "submit:500", "--script", "submit:ok",
        "--dishonest-eta", "--allow-auth-on-assets", "--api-key", "a", "--api-key", "b",
    ])  # fmt: skip
    config = config_from_args(ns)
    assert config.account_error == AccountError(
        after=20, status=403, reason="INVALID_API_KEY", routes=("submit", "models")
    )
    assert config.account_error.message == "invalid API key"
    assert config.outage == Outage(seconds=15, after=3)
    assert config.faults["submit"] == FaultSpec(rate_429=1, retry_after=86400, for_seconds=10)
    assert config.faults["image"].bandwidth == 0.5
    assert config.fault_scripts == {"submit": ("500", "ok")}
    assert (config.eta_honest, config.allow_auth_on_assets) == (False, True)
    assert config.api_keys == frozenset({"a", "b"})
    for bad in (
        ["--outage", "seconds=-1"],
        ["--outage", "after=2"],
        ["--account-error", "status=200"],
        ["--account-error", "routes=image"],
        ["--image-mode", "huge"],
        ["--workers", "many"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError):
        config_from_args(parser.parse_args(["--workers", "0"]))


async def test_a_client_leaving_mid_body_is_counted_not_an_error(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    config = EmulatorConfig(task_base_seconds=0, image_mode="tiny", image_size_bytes=4_000_000)
    async with Emulator(config) as emu:
        face = await upload(session, emu)
        answer = await finished_task(session, emu, body(face, face))
        emu.faults.set("image", FaultSpec(bandwidth=2_000_000))
        async with session.get(answer["images"][0]["image_url"]) as resp:
            await resp.content.readexactly(1000)
            resp.close()  # drop the connection with most of the body unsent
        with anyio.fail_after(10):
            stats = await emu.wait_stats(lambda s: s.count("image", "client_closed") == 1)
        assert stats.in_flight == {}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
