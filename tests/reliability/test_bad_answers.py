"""Malformed answers from the service: a typed error for that job, never a crash of the run.

Also the credential rules around them: no Authorization on asset uploads or image URLs, even after a
redirect to another origin, and no file anywhere but OUT (``file://`` image URLs are refused).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from novita_async import InstantIDRequest, NovitaClient, PollPolicy, RetryPolicy
from novita_async.batch import BatchOptions, BatchRunner, Job, JobOutcome

from .checks import API_KEY, SIGNATURE_MARK, LeakWatch, leaks_in_folder, read_results, snapshot
from .loopback import BEHAVIOURS, Misbehaving, misbehaving_service, png_bytes


def _job(behaviour: str) -> Job:
    request = InstantIDRequest(prompt=behaviour, width=128, height=128)
    return Job(id=behaviour, face_images=[png_bytes(1)], ref_images=[png_bytes(2)], request=request)


async def _run(service: Misbehaving, out: Path, behaviours: list[str]) -> list[JobOutcome]:
    retry = RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.02)
    async with NovitaClient(
        API_KEY, base_url=service.api.url, assets_url=f"{service.api.url}/image", retry=retry
    ) as client:
        poll = PollPolicy(min_delay=0.01, initial_delay=0.01, margin=0.01, max_delay=0.05)
        runner = BatchRunner(client, out, BatchOptions(concurrency=8, poll=poll, task_timeout=0.5))
        async with runner.run([_job(b) for b in behaviours]) as outcomes:
            return [outcome async for outcome in outcomes]


def _contents(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in folder.rglob("*") if path.is_file()]


async def test_each_malformed_answer_fails_its_own_job_with_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    with LeakWatch(API_KEY, SIGNATURE_MARK) as logs:
        async with misbehaving_service() as service:
            outcomes = await _run(service, out, list(BEHAVIOURS))

    by_id = {o.job_id: o for o in outcomes}
    assert sorted(by_id) == sorted(BEHAVIOURS)
    for behaviour, expected in BEHAVIOURS.items():
        outcome = by_id[behaviour]
        if expected is None:
            assert outcome.ok, outcome
            assert outcome.files == (f"{behaviour}_0.png",)
        else:
            assert outcome.status == "failed" and outcome.error is not None
            assert outcome.error.type in expected, (behaviour, outcome.error)
            assert not list(out.glob(f"{behaviour}_*"))
    assert len(read_results(out)) == len(BEHAVIOURS)

    # Credentials went to the API routes only: not to uploads, image URLs or redirect targets.
    api_auth = dict(zip(service.api.paths, service.api.authorizations, strict=True))
    assert api_auth["/image"] is None
    assert {
        a
        for p, a in zip(service.api.paths, service.api.authorizations, strict=True)
        if p != "/image"
    } == {f"Bearer {API_KEY}"}
    assert service.images.authorizations and set(service.images.authorizations) == {None}
    # The image redirect to another origin was followed; the API's 307s were not.
    assert service.elsewhere.paths == ["/landed.png"]
    assert service.elsewhere.authorizations == [None]
    # Nothing read from file:// and nothing written outside OUT; no secret in logs or files.
    assert snapshot(tmp_path, skip=out) == {}
    assert all(b"root:" not in data for data in _contents(out))
    assert logs.leaks == []
    assert leaks_in_folder(out, API_KEY, SIGNATURE_MARK) == []


async def test_an_html_page_served_as_an_image_is_not_saved_as_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with misbehaving_service() as service:
        (outcome,) = await _run(service, out, ["image_html"])
    assert outcome.status == "failed", outcome
    assert not (out / "image_html" / "0.png").exists()
