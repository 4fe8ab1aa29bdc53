"""Asset ids the journal remembers, and a service that no longer knows them (issue 20, defect 3).

The real service documents no asset lifetime and no error of its own for an unknown asset: these
tests run the emulator with ``asset_errors="plain"``, whose refusal is a bare 400
``INVALID_REQUEST_BODY`` with a generic message and no metadata, as the service may answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from novita_async import NovitaClient
from novita_async.batch import BatchOptions, BatchRunner
from novita_async.batch._inputs import asset_endpoint
from novita_async.batch._journal import Journal
from novita_async.emulator import Emulator, EmulatorConfig

from .conftest import make_job

PLAIN = pytest.mark.emulator(asset_errors="plain")


def records(out: Path) -> list[dict[str, object]]:
    lines = (out / ".novita-journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def kinds_of(out: Path, job_id: str) -> list[object]:
    return [r["type"] for r in records(out) if r.get("id") == job_id]


def asset_ids_by_content(out: Path) -> dict[object, list[object]]:
    """Each content's asset ids, in the order the journal recorded them."""
    ids: dict[object, list[object]] = {}
    for record in records(out):
        if record["type"] == "asset":
            ids.setdefault(record["sha256"], []).append(record["asset_id"])
    return ids


@PLAIN
async def test_ids_the_service_forgot_are_uploaded_again_once_and_the_jobs_succeed(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = await BatchRunner(client, out).run_all([make_job("a", images(1), images(2))])
    assert first.succeeded == 1 and emu.stats().uploads == 2
    before = asset_ids_by_content(out)
    emu.faults.forget_assets(emu.asset_ids())

    # New jobs with the same inputs: the journal's ids are sent and refused (a plain 400); each
    # input is uploaded again exactly once, and the jobs that had built their bodies with the
    # old ids meanwhile send the new ones instead of meeting the refusal too.
    jobs = [make_job(f"b{n}", images(1), images(2)) for n in range(3)]
    later = await BatchRunner(client, out, BatchOptions(concurrency=1)).run_all(jobs)
    assert (later.succeeded, later.failed) == (3, 0)
    stats = emu.stats()
    assert stats.uploads == 4
    assert stats.count("submit", 400) == 1 and stats.faults == {"forgotten_asset": 1}
    assert stats.submissions == 4 and stats.duplicate_submissions == 0
    # The refusal is on record as "no task made", then the one submission that made the task.
    histories = sorted(kinds_of(out, job.id) for job in jobs)
    once = ["submitting", "submitted", "succeeded"]
    assert histories == sorted([once, once, ["submitting", "not_submitted", *once]])
    # The cache entries are replaced: each content's newest id is new, and named by endpoint.
    after = asset_ids_by_content(out)
    assert after.keys() == before.keys()
    for sha, ids in after.items():
        assert len(ids) == 2 and ids[0] == before[sha][0] and ids[1] != ids[0]
    endpoints = {r["endpoint"] for r in records(out) if r["type"] == "asset"}
    assert endpoints == {asset_endpoint(emu.assets_url)}


@pytest.mark.emulator(asset_errors="plain", asset_ttl=0.0)
async def test_a_refusal_of_fresh_ids_is_the_jobs_own_after_one_retry_with_cached_ones(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    # Every asset expires at once: whatever the runner sends is refused.
    out = tmp_path / "out"
    job = make_job("a", images(1), images(2))
    first = await BatchRunner(client, out).run_all([job])
    # Its ids were uploaded just now: the refusal is the job's own, at once.
    assert first.failures_by_reason == {"INVALID_REQUEST_BODY": 1}
    assert (emu.stats().uploads, emu.stats().count("submit", 400)) == (2, 1)

    # retry_failed: the journal's ids are sent and refused; the files are uploaded again and the
    # body sent once more; refused again, with fresh ids, the job fails for good.
    retried = await BatchRunner(client, out, BatchOptions(retry_failed=True)).run_all([job])
    assert retried.failures_by_reason == {"INVALID_REQUEST_BODY": 1}
    stats = emu.stats()
    assert (stats.uploads, stats.count("submit", 400), stats.submissions) == (4, 3, 0)
    assert kinds_of(out, "a") == [
        "submitting", "not_submitted", "failed",
        "submitting", "not_submitted", "submitting", "not_submitted", "failed",
    ]  # fmt: skip


@PLAIN
@pytest.mark.parametrize("reason", ["ILLEGAL_PROMPT", "IMAGE_NO_FACE_DETECTED"])
async def test_another_refusal_with_cached_ids_fails_the_job_at_once_with_no_upload(
    emu: Emulator,
    client: NovitaClient,
    images: Callable[[int], Path],
    tmp_path: Path,
    reason: str,
) -> None:
    out = tmp_path / "out"
    await BatchRunner(client, out).run_all([make_job("a", images(1), images(2))])
    emu.faults.account_error(after=0, status=400, reason=reason)  # every submission refused
    later = await BatchRunner(client, out).run_all([make_job("b", images(1), images(2))])
    assert later.failures_by_reason == {reason: 1}
    stats = emu.stats()
    assert (stats.uploads, stats.count("submit", 400)) == (2, 1)
    assert kinds_of(out, "b") == ["submitting", "not_submitted", "failed"]


@PLAIN
async def test_a_run_against_another_asset_endpoint_uploads_instead_of_reusing_ids(
    emu: Emulator, client: NovitaClient, images: Callable[[int], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    await BatchRunner(client, out).run_all([make_job("a", images(1), images(2))])
    config = EmulatorConfig(seed=2, task_base_seconds=0.0, image_mode="tiny", asset_errors="plain")
    async with (
        Emulator(config) as other,
        NovitaClient(other.api_key, base_url=other.base_url, assets_url=other.assets_url) as c,
    ):
        later = await BatchRunner(c, out).run_all([make_job("b", images(1), images(2))])
        stats = other.stats()
    assert later.succeeded == 1
    # Nothing the first endpoint issued was sent to the second.
    assert (stats.uploads, stats.count("submit", 400), stats.submissions) == (2, 0, 1)
    assert emu.stats().uploads == 2
    # Both endpoints' ids are kept: a run back on the first reuses its ids.
    again = await BatchRunner(client, out).run_all([make_job("c", images(1), images(2))])
    assert again.succeeded == 1 and emu.stats().uploads == 2


def test_ids_recorded_without_an_endpoint_are_not_reused(tmp_path: Path) -> None:
    # A journal from before endpoints were recorded: its ids may be any endpoint's.
    path = tmp_path / "j.jsonl"
    old = {"type": "asset", "sha256": "abc", "asset_id": "asset-1", "t": 1.0}
    path.write_text(json.dumps(old) + "\n")
    with Journal(path) as journal:
        assert journal.assets == {}
        journal.record_asset(("http://127.0.0.1:9/image", "abc"), "asset-2")
    with Journal(path) as journal:
        assert journal.assets == {("http://127.0.0.1:9/image", "abc"): "asset-2"}


def test_the_endpoint_keeps_no_credentials_or_query() -> None:
    assert asset_endpoint("https://user:pw@assets.example:8443/image?sig=x#f") == (
        "https://assets.example:8443/image"
    )
    assert asset_endpoint("https://assets.novitai.com/image") == "https://assets.novitai.com/image"
