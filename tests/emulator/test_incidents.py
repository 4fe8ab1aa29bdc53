"""Run-level faults: an account refused after N tasks, an outage of the API origin, and a
service that forgets tasks and assets."""

from __future__ import annotations

import errno
import socket

import aiohttp
import anyio
import pytest
import yarl
from emu_helpers import auth, body, finished_task, get_result, post_task, upload

from novita_async import _spec
from novita_async.emulator import API_ROUTES, AccountError, Emulator, EmulatorStats, Outage

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

MODELS = "/v3/model"
ERROR_KEYS = {"code", "reason", "message", "metadata"}


async def _models(session: aiohttp.ClientSession, emu: Emulator) -> int:
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        await resp.read()
        return resp.status


async def _wait(emu: Emulator, predicate: object) -> EmulatorStats:
    with anyio.fail_after(10):
        return await emu.wait_stats(predicate)  # type: ignore[arg-type]


async def _refused(session: aiohttp.ClientSession, emu: Emulator) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await _models(session, emu)
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


# --- the account ---------------------------------------------------------------------------------


async def test_the_balance_runs_out_after_n_tasks(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.account_error(after=2)
    answers = [await post_task(session, emu, body(face, face, seed=n)) for n in range(4)]
    assert [status for status, _ in answers] == [200, 200, 400, 400]
    refused = answers[2][1]
    assert set(refused) == ERROR_KEYS
    assert (refused["code"], refused["reason"]) == (400, "BILLING_BALANCE_NOT_ENOUGH")
    stats = emu.stats()
    assert stats.submissions == 2
    assert stats.faults == {"account_error": 2}
    # Only submissions are refused: the tasks already paid for can be followed.
    status, result = await get_result(session, emu, answers[0][1]["task_id"])
    assert status == 200 and result["task"]["status"] == _spec.STATUS_SUCCEED
    emu.faults.clear()
    assert (await post_task(session, emu, body(face, face, seed=9)))[0] == 200


async def test_a_revoked_key_is_refused_on_every_api_route(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    task_id = (await finished_task(session, emu, body(face, face)))["task"]["task_id"]
    emu.faults.account_error(status=403, reason="INVALID_API_KEY", routes=API_ROUTES)
    status, answer = await post_task(session, emu, body(face, face, seed=3))
    assert (status, answer["reason"], answer["message"]) == (
        403,
        "INVALID_API_KEY",
        "invalid API key",
    )
    assert (await get_result(session, emu, task_id))[0] == 403
    assert await _models(session, emu) == 403
    await upload(session, emu)  # the asset host knows no keys
    assert emu.stats().faults == {"account_error": 3}


async def test_account_error_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.base_url + "/__emulator/account-error"
    error = {"after": 0, "status": 403, "reason": "FEATURE_NOT_ALLOWED", "routes": ["models"]}
    async with session.post(url, json=error) as resp:
        assert resp.status == 200
    async with session.get(emu.base_url + MODELS, headers=auth(emu)) as resp:
        assert resp.status == 403
        assert (await resp.json())["reason"] == "FEATURE_NOT_ALLOWED"
    for bad in ({"status": 200}, {"routes": ["upload"]}, {"after": -1}, {"colour": "red"}):
        async with session.post(url, json=bad) as resp:
            assert resp.status == 400, bad
    assert AccountError.parse("after=3,reason=API_NOT_ALLOWED,routes=submit+result") == (
        AccountError(after=3, reason="API_NOT_ALLOWED", routes=("submit", "result"))
    )


# --- outages -------------------------------------------------------------------------------------


async def test_an_outage_refuses_connections_until_it_ends(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    assert await _models(session, emu) == 200  # the session now holds an open connection
    base_url = emu.base_url
    emu.faults.outage(seconds=3600)
    stats = await _wait(emu, lambda s: s.outages == 1)
    assert stats.outage_active
    await _refused(session, emu)
    await _refused(session, emu)
    await upload(session, emu)  # the other origins stay up
    emu.faults.clear()  # ends it now
    await _wait(emu, lambda s: not s.outage_active)
    assert emu.base_url == base_url
    assert await _models(session, emu) == 200


async def test_an_outage_ends_by_itself_after_its_seconds(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.outage(Outage(seconds=0.05))
    await _wait(emu, lambda s: s.outages == 1 and not s.outage_active)
    assert await _models(session, emu) == 200


async def test_an_outage_after_n_tasks_begins_at_the_next_request(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face = await upload(session, emu)
    emu.faults.outage(seconds=3600, after=1)
    assert await _models(session, emu) == 200
    assert (await post_task(session, emu, body(face, face, seed=1)))[0] == 200
    with pytest.raises(aiohttp.ClientConnectionError):  # reset as the outage begins
        await post_task(session, emu, body(face, face, seed=2))
    await _wait(emu, lambda s: s.outages == 1)
    await _refused(session, emu)
    stats = emu.stats()
    assert stats.submissions == 1
    assert stats.faults == {"outage_reset": 1}
    assert stats.count("submit", "reset") == 1
    emu.faults.clear()
    await _wait(emu, lambda s: not s.outage_active)
    assert (await post_task(session, emu, body(face, face, seed=2)))[0] == 200


async def test_an_outage_cuts_the_requests_in_flight(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    emu.faults.hold("models")
    failures: list[BaseException] = []

    async def call() -> None:
        try:
            await _models(session, emu)
        except aiohttp.ClientError as problem:
            failures.append(problem)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(10):
            await emu.wait_in_flight("models")
        emu.faults.outage(seconds=3600)
        await _wait(emu, lambda s: s.outages == 1)
    # Disconnected (aiohttp then retries a GET on a new connection, which is refused).
    assert len(failures) == 1 and isinstance(failures[0], aiohttp.ClientConnectionError)
    emu.faults.clear()  # releases the held request too: its answer goes nowhere, quietly
    await _wait(emu, lambda s: not s.outage_active and not s.in_flight)


async def test_an_outage_over_http_is_answered_before_it_begins(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    url = emu.base_url + "/__emulator/outage"
    async with session.post(url, json={"seconds": 0}) as resp:
        assert resp.status == 400
    async with session.post(url, json={"seconds": 3600}) as resp:
        assert resp.status == 200
        assert await resp.json() == {}
    await _wait(emu, lambda s: s.outages == 1)
    await _refused(session, emu)
    emu.faults.clear()
    await _wait(emu, lambda s: not s.outage_active)


@pytest.mark.emulator(outage=Outage(seconds=3600))
async def test_an_emulator_can_start_in_an_outage_and_close_in_one(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    await _wait(emu, lambda s: s.outages == 1)
    await _refused(session, emu)


@pytest.mark.emulator(outage=Outage(seconds=3600))
async def test_an_outage_keeps_its_port_from_any_other_server(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    # Another test's server taking the freed port would answer where a refusal belongs.
    await _wait(emu, lambda s: s.outages == 1)
    host, port = "127.0.0.1", yarl.URL(emu.base_url).port
    with socket.socket() as other, pytest.raises(OSError) as taken:
        other.bind((host, port))
    assert taken.value.errno == errno.EADDRINUSE
    await _refused(session, emu)
    emu.faults.clear()
    await _wait(emu, lambda s: not s.outage_active)
    assert await _models(session, emu) == 200  # listening again, on the port it held


# --- a service that forgets ----------------------------------------------------------------------


async def test_a_forgotten_task_is_not_found(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    kept, forgotten = [await finished_task(session, emu, body(face, face, seed=n)) for n in (1, 2)]
    task_id = forgotten["task"]["task_id"]
    emu.faults.forget_tasks([task_id])
    status, answer = await get_result(session, emu, task_id)
    assert status == 404
    assert set(answer) == ERROR_KEYS and answer["reason"] == "TASK_NOT_FOUND"
    assert (await get_result(session, emu, kept["task"]["task_id"]))[0] == 200
    async with session.get(forgotten["images"][0]["image_url"]) as resp:
        assert resp.status == 200  # the image host is not the API: its URLs still work
    assert emu.stats().faults == {"forgotten_task": 1}
    assert emu.task_ids() == [kept["task"]["task_id"], task_id]


async def test_a_forgotten_asset_is_refused_by_name(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face, ref = await upload(session, emu), await upload(session, emu)
    assert emu.asset_ids() == [face, ref]
    emu.faults.forget_assets([face])
    status, answer = await post_task(session, emu, body(face, ref))
    assert status == 400
    assert answer["reason"] == "INVALID_REQUEST_BODY"
    assert answer["metadata"] == {"field": "face_image_assets_ids[0]"}
    assert face in answer["message"]
    assert (await post_task(session, emu, body(ref, ref)))[0] == 200
    again = await upload(session, emu)  # uploading the image again gives a known id
    assert (await post_task(session, emu, body(again, ref)))[0] == 200
    stats = emu.stats()
    assert stats.faults == {"forgotten_asset": 1}
    assert stats.submissions == 2


@pytest.mark.emulator(asset_errors="plain")
async def test_in_plain_mode_an_unknown_asset_is_refused_as_the_service_may_without_naming_it(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    face, ref = await upload(session, emu), await upload(session, emu)
    emu.faults.forget_assets([face])
    never_issued = "aWQtZnJvbS1lbHNld2hlcmU="
    for sent in (body(face, ref), body(ref, never_issued)):
        status, answer = await post_task(session, emu, sent)
        # No metadata and no word of an asset: all a client may count on is the reason.
        assert status == 400
        assert answer == {
            "code": 400,
            "reason": "INVALID_REQUEST_BODY",
            "message": "invalid request body",
        }
    assert (await post_task(session, emu, body(ref, ref)))[0] == 200
    assert emu.stats().faults == {"forgotten_asset": 1}


@pytest.mark.emulator(asset_ttl=0.0, asset_errors="plain")
async def test_assets_expire_after_asset_ttl(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)  # at once too old, with a TTL of 0
    status, answer = await post_task(session, emu, body(face, face))
    assert (status, answer["reason"]) == (400, "INVALID_REQUEST_BODY")
    assert emu.stats().faults == {"expired_asset": 1} and emu.stats().submissions == 0


async def test_forget_over_http(emu: Emulator, session: aiohttp.ClientSession) -> None:
    face = await upload(session, emu)
    task_id = (await finished_task(session, emu, body(face, face)))["task"]["task_id"]
    url = emu.base_url + "/__emulator/forget"
    async with session.post(url, json={"tasks": "all", "assets": [face]}) as resp:
        assert await resp.json() == {"tasks": 1, "assets": 1}
    assert (await get_result(session, emu, task_id))[0] == 404
    assert (await post_task(session, emu, body(face, face)))[0] == 400
    async with session.post(url, json={"tasks": "some"}) as resp:
        assert resp.status == 400
    emu.faults.clear()  # the service remembers again
    assert (await get_result(session, emu, task_id))[0] == 200
