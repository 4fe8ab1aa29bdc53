"""Shards on one local Ray instance (started once for this module) against emulator processes,
into local folders and into moto's S3 server on loopback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import ray
from PIL import Image
from support import S3_SECRET, S3Bucket, s3_env

from novita_async import BatchOptions, BatchRunner, ClientConfig, InstantIDRequest, NovitaClient
from novita_async.batch import (
    BatchEvent,
    BatchEventKind,
    BatchSummary,
    InvalidJob,
    Job,
    Shard,
    shard_of,
)
from novita_async.batch._jobs import JobInputError
from novita_async.batch._pacing import RunGate
from novita_async.emulator import EmulatorProcess
from novita_async.ray import (
    Connection,
    PermitsProxy,
    RatePermits,
    SecretKey,
    ShardRunner,
    run_sharded,
    shard_actor_name,
)

# One worker runs every test that starts Ray (here and the benchmark run's shards): two Ray
# instances starting at once on two cores make both slow enough to time out.
pytestmark = pytest.mark.xdist_group("ray")

EMULATOR_LIMIT = 4  # submissions per second per key (a sliding one-second window)


@pytest.fixture(scope="module")
def local_ray(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The workers of a local instance inherit the environment it was started with: the store's
    # credentials reach the shards that way (as a node's own environment would), never as an
    # argument. Their staging folders are theirs, apart from the driver's (as on other nodes).
    worker_env = {
        **s3_env(s3_server),
        "NOVITA_ASYNC_STAGING": str(tmp_path_factory.mktemp("worker-staging")),
    }
    with pytest.MonkeyPatch.context() as env:
        for name, value in worker_env.items():
            env.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _emulator(*options: str) -> EmulatorProcess:
    return EmulatorProcess("--seed", "1", "--image-mode", "tiny", *options)


def _connection(emulator: EmulatorProcess) -> dict[str, str]:
    env = emulator.env
    return {
        "api_key": env["NOVITA_API_KEY"],
        "base_url": env["NOVITA_BASE_URL"],
        "assets_url": env["NOVITA_ASSETS_URL"],
    }


def _config(emulator: EmulatorProcess) -> ClientConfig:
    return ClientConfig.resolve(**_connection(emulator))


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _job_file(folder: Path, ids: list[str]) -> Path:
    """A job file in ``folder`` with one line per id, each job's face and reference one picture."""
    (folder / "face.png").write_bytes(_png(3))
    job_file = folder / "jobs.jsonl"
    job_file.write_text(
        "".join(
            json.dumps({"id": i, "face_images": ["face.png"], "ref_images": ["face.png"],
                        "prompt": f"p {i}"}) + "\n"
            for i in ids
        )
    )  # fmt: skip
    return job_file


def _job(job_id: str, n: int) -> Job:
    # Each prompt differs: the emulator's duplicate count then means "the same job twice".
    request = InstantIDRequest(prompt=f"portrait of {job_id}", width=128, height=128)
    return Job(id=job_id, face_images=[_png(n)], ref_images=[_png(n + 7)], request=request)


def _jobs(per_shard: int, shards: int = 2, prefix: str = "job") -> list[Job]:
    """``per_shard`` jobs for each of ``shards`` shards (ids chosen by the hash)."""
    chosen: dict[int, list[str]] = {k: [] for k in range(shards)}
    n = 0
    while any(len(ids) < per_shard for ids in chosen.values()):
        job_id = f"{prefix}{n}"
        if len(ids := chosen[shard_of(job_id, shards)]) < per_shard:
            ids.append(job_id)
        n += 1
    ids = sorted(job_id for some in chosen.values() for job_id in some)
    return [_job(job_id, i) for i, job_id in enumerate(ids)]


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _lines_by_id(out: Path) -> dict[str, tuple[str, tuple[str, ...], str | None]]:
    by_id: dict[str, tuple[str, tuple[str, ...], str | None]] = {}
    for line in _results(out):
        assert line["id"] not in by_id, f"{line['id']} listed twice"
        reason = None if line["error"] is None else line["error"]["reason"]
        by_id[line["id"]] = (line["status"], tuple(line["files"]), reason)
    return by_id


async def test_shards_together_keep_under_the_account_rate(local_ray: None, tmp_path: Path) -> None:
    jobs = _jobs(6)
    # Well under the limit: each POST reaches the emulator after a Ray call and a worker's
    # turn, and on a busy machine two of them can land a few hundred ms closer than their
    # permits were (at 3.5/s a 0.15 s bunching was enough to put five in one second).
    rate = EMULATOR_LIMIT - 1.5
    with _emulator("--task-seconds", "0", "--rate-limit", str(EMULATOR_LIMIT)) as emulator:
        summary = await run_sharded(
            jobs,
            tmp_path / "shared",
            BatchOptions(rate=rate),
            shards=2,
            connection=_config(emulator),
        )
        assert (summary.succeeded, summary.failed) == (12, 0)
        stats = emulator.stats()
        assert (stats["rate_limited"], stats["submissions"]) == (0, 12)

        # The same rate for each shard, without shared permits: together they go over the
        # account's limit (what the test above would see if the permits were not shared).
        async with (
            NovitaClient(**_connection(emulator)) as client,
            anyio.create_task_group() as both,
        ):
            for k in range(2):
                runner = BatchRunner(
                    client, tmp_path / "apart", BatchOptions(shard=Shard(k, 2), rate=rate)
                )
                both.start_soon(runner.run_all, _jobs(6, prefix="apart"))
        assert emulator.stats()["rate_limited"] > 0


async def test_a_429_seen_by_one_shard_pauses_every_shard(local_ray: None) -> None:
    permits = RatePermits.remote(None)  # type: ignore[attr-defined]
    one = RunGate(permits=PermitsProxy(permits))
    other = RunGate(permits=PermitsProxy(permits))
    await other.wait()  # open: no rate, no pause
    began = anyio.current_time()
    pause = one.rate_limited(1.5)  # this gate's 429, told to the permits
    assert pause == 1.5 and other.paused_for == 0.0  # the other gate knows nothing itself
    # Told without waiting (the 429's handling never waits on another process): until the
    # permits have it, the other gate could still go; from then on it cannot.
    while (await permits.counts.remote())["pauses"] == 0:
        pass
    await other.wait()
    # Both clocks are this machine's monotonic clock: the pause began after `began`.
    assert anyio.current_time() - began >= pause
    assert await permits.counts.remote() == {"granted": 2, "pauses": 1}
    ray.kill(permits)


async def _run_killing_shard_0(
    jobs: list[Job], out: str | Path, after: int
) -> tuple[BatchSummary, dict[str, Any]]:
    """Run ``jobs`` in 2 shards, one task at a time each; shard 0's actor is killed (as a node
    dies) once ``after`` of its jobs have ended, and Ray restarts it. The summary, the emulator's
    stats."""
    ended: list[str] = []

    def on_progress(event: BatchEvent) -> None:
        if event.kind is BatchEventKind.SUCCEEDED and shard_of(event.job_id, 2) == 0:
            ended.append(event.job_id)
            if len(ended) == after:
                ray.kill(ray.get_actor(shard_actor_name(out, Shard(0, 2))), no_restart=False)

    with _emulator("--task-seconds", "0.3") as emulator:
        summary = await run_sharded(
            jobs,
            out,
            BatchOptions(concurrency=1),
            shards=2,
            on_event=on_progress,
            connection=_config(emulator),
        )
        stats: dict[str, Any] = emulator.stats()
    assert len(ended) >= after  # the kill happened
    return summary, stats


def _each_job_once_none_paid_twice(
    lines: dict[str, tuple[str, tuple[str, ...], Any]], jobs: list[Job], stats: dict[str, Any]
) -> None:
    assert sorted(lines) == sorted(job.id for job in jobs)  # every job accounted for, once
    # A submission the dead process sent without recording its answer is of unknown outcome
    # (never sent again); every other job succeeded.
    unknown = [i for i, (_, _, reason) in lines.items() if reason == "SUBMIT_OUTCOME_UNKNOWN"]
    assert len(unknown) <= 1
    assert all(status == "succeeded" for i, (status, _, _) in lines.items() if i not in unknown)
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions"] <= len(jobs)


async def test_a_killed_shard_is_restarted_and_resumes_from_its_journal(
    local_ray: None, tmp_path: Path
) -> None:
    jobs = _jobs(6)
    out = tmp_path / "out"
    # Shard 0 dies once one of its jobs has ended: five are left.
    summary, stats = await _run_killing_shard_0(jobs, out, after=1)
    _each_job_once_none_paid_twice(_lines_by_id(out), jobs, stats)
    assert summary.replayed >= 1  # the restarted shard found its ended jobs in its journal
    assert summary.jobs == len(jobs)


async def test_merged_results_equal_a_single_process_run(local_ray: None, tmp_path: Path) -> None:
    jobs: list[Job | InvalidJob] = [*_jobs(3)]
    jobs.append(InvalidJob("bad-line", JobInputError("INVALID_JOB_LINE", "line 9: no prompt")))
    missing = tmp_path / "missing.png"
    jobs.append(Job(id="no-face", face_images=[missing], ref_images=[_png(1)],
                    request=InstantIDRequest(prompt="p", width=128, height=128)))  # fmt: skip
    with _emulator("--task-seconds", "0") as emulator:
        await run_sharded(jobs, tmp_path / "sharded", shards=2, connection=_config(emulator))
        async with NovitaClient(**_connection(emulator)) as client:
            await BatchRunner(client, tmp_path / "single").run_all(jobs)
    sharded, single = _lines_by_id(tmp_path / "sharded"), _lines_by_id(tmp_path / "single")
    assert sharded == single
    assert sharded["bad-line"][2] == "INVALID_JOB_LINE"
    assert sharded["no-face"][0] == "failed"
    for job_id, (_, files, _) in sharded.items():
        assert all((tmp_path / "sharded" / name).is_file() for name in files), job_id


def test_the_api_key_shows_masked() -> None:
    key = "sk-very-secret-key-0123456789"
    config = ClientConfig.resolve(key, base_url="http://127.0.0.1:9")
    for shown in (repr(SecretKey(key)), str(SecretKey(key)), repr(Connection.of(config))):
        assert key not in shown and "***6789" in shown
    assert Connection.of(config).api_key.reveal() == key


def test_cli_runs_the_shards_with_one_progress_display(local_ray: None, tmp_path: Path) -> None:
    ids = [job.id for job in _jobs(2)]
    job_file = _job_file(tmp_path, ids)
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    with _emulator("--task-seconds", "0") as emulator:
        command = [sys.executable, "-m", "novita_async", "run", str(job_file), "--out", str(out),
                   "--ray", "--ray-address", address, "--shards", "2", "--no-progress",
                   "--width", "128", "--height", "128"]  # fmt: skip
        done = subprocess.run(
            command,
            env={**os.environ, **emulator.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr + done.stdout
    # One display: each job's end is told once, by the driver, whichever shard ran it.
    for job_id in ids:
        assert done.stdout.count(f"succeeded {job_id} ") == 1, done.stdout
    assert "4 jobs: 4 succeeded, 0 failed" in done.stdout
    assert sorted(_lines_by_id(out)) == sorted(ids)
    assert (out / "index.html").is_file()
    assert all(i in (out / "index.html").read_text() for i in ids)
    # The same folder with another number of shards is refused, naming both.
    again = subprocess.run(
        [*command[: command.index("--shards") + 1], "3", *command[command.index("--shards") + 2 :]],
        env={**os.environ, **emulator.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2
    assert "2 shards" in again.stderr and "3 shards" in again.stderr


def _ray_says_to_every_driver(message: str) -> None:
    # What a raylet does when it warns (too many workers started, a worker died): an error
    # message published to every driver of the instance, which Ray's driver prints on stdout.
    # Ray has no public call for it; this is the one its own processes use.
    from ray._private.utils import publish_error_to_driver

    publish_error_to_driver("novita-test", message, ray._private.worker.global_worker.gcs_client)


def test_cli_json_on_ray_keeps_stdout_to_the_document_and_warns_of_nothing(
    local_ray: None, tmp_path: Path
) -> None:
    ids = [job.id for job in _jobs(1, shards=4)]
    job_file = _job_file(tmp_path, ids)
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    marker = "novita-test: a raylet's warning to every driver"
    # Each task takes two seconds: the run is still connected to Ray when the marker goes out.
    with _emulator("--task-seconds", "2") as emulator:
        run = subprocess.Popen(
            [sys.executable, "-m", "novita_async", "run", str(job_file), "--out", str(out),
             "--ray", "--ray-address", address, "--shards", "4", "--json",
             "--width", "128", "--height", "128"],
            env={**os.environ, **emulator.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            # The run's driver has joined Ray (and listens) once its shards exist.
            shards = f"novita-async:{out.absolute()}:"
            while run.poll() is None and not any(
                actor["name"].startswith(shards)
                for actor in ray.util.list_named_actors(all_namespaces=True)
            ):
                time.sleep(0.05)
            _ray_says_to_every_driver(marker)
            stdout, stderr = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
    assert run.returncode == 0, stderr + stdout
    document = json.loads(stdout)  # stdout holds the document and nothing else
    assert document["summary"]["succeeded"] == len(ids) == 4
    assert marker in stderr  # Ray's line was told, where diagnostics go
    # The shards' constructor takes no argument Ray must keep in its object store (Ray warns
    # that a restart would fail without it, on every run).
    assert "constructor arguments in the object store" not in stderr, stderr


# --- into object storage ------------------------------------------------------------------------


def _stored_lines(bucket: S3Bucket, prefix: str) -> dict[str, tuple[str, tuple[str, ...], Any]]:
    by_id: dict[str, tuple[str, tuple[str, ...], Any]] = {}
    for line in bucket.get(f"{prefix}/results.jsonl").decode().splitlines():
        record = json.loads(line)
        assert record["id"] not in by_id, f"{record['id']} listed twice"
        reason = None if record["error"] is None else record["error"]["reason"]
        by_id[record["id"]] = (record["status"], tuple(record["files"]), reason)
    return by_id


def _no_secret_in_the_bucket(bucket: S3Bucket, *secrets: str) -> None:
    for key in bucket.keys(prefix=""):
        data = bucket.get(key)
        assert [s for s in secrets if s.encode() in data] == [], key


async def test_shards_into_the_bucket_equal_a_single_process_run(
    local_ray: None, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs: list[Job | InvalidJob] = [*_jobs(3)]
    jobs.append(InvalidJob("bad-line", JobInputError("INVALID_JOB_LINE", "line 9: no prompt")))
    url = s3_bucket.url("sharded")
    reprs: list[str] = []

    def on_progress(event: BatchEvent) -> None:
        if not reprs:  # a live shard's repr, as Ray's logs would show it
            actor = ray.get_actor(shard_actor_name(url, Shard(0, 2)))
            reprs.append(ray.get(actor.__ray_call__.remote(repr)))

    with _emulator("--task-seconds", "0") as emulator:
        key = emulator.env["NOVITA_API_KEY"]
        summary = await run_sharded(
            jobs, url, shards=2, on_event=on_progress, connection=_config(emulator)
        )
        async with NovitaClient(**_connection(emulator)) as client:
            await BatchRunner(client, s3_bucket.url("single")).run_all(jobs)
        assert emulator.stats()["duplicate_submissions"] == 0
    assert (summary.succeeded, summary.failed) == (6, 1)
    sharded, single = _stored_lines(s3_bucket, "sharded"), _stored_lines(s3_bucket, "single")
    assert sharded == single
    keys = s3_bucket.keys("sharded/")
    images = sorted(f"sharded/{name}" for _, files, _ in sharded.values() for name in files)
    assert len(images) == 6 and set(images) <= set(keys)
    for k in range(2):
        # Each shard's journal in the store, compacted into one segment at its end.
        journal = f"sharded/.novita-shards/{k}-of-2/.novita-journal/"
        assert len([key for key in keys if key.startswith(journal)]) == 1, keys
    assert not [key for key in keys if key.startswith("sharded/.novita-journal/")]
    # The driver's merged copy, in its own staging folder, is what it uploaded.
    assert list((tmp_path / "staging").rglob("results.jsonl"))
    assert reprs == [f"<ShardRunner 0/2 of {url}>"]
    config = ClientConfig.resolve(key, base_url="http://127.0.0.1:9")
    shown = repr(ShardRunner(url, BatchOptions(shard=Shard(0, 2)), Connection.of(config), None))
    assert key not in shown and S3_SECRET not in shown
    _no_secret_in_the_bucket(s3_bucket, S3_SECRET, key)


async def test_a_shard_killed_while_writing_to_the_bucket_resumes_from_its_segments(
    local_ray: None, s3_bucket: S3Bucket
) -> None:
    jobs = _jobs(6)
    url = s3_bucket.url("killed")
    # Shard 0 dies once two of its jobs have ended: it has submitted two tasks or three.
    summary, stats = await _run_killing_shard_0(jobs, url, after=2)
    lines = _stored_lines(s3_bucket, "killed")
    _each_job_once_none_paid_twice(lines, jobs, stats)
    keys = s3_bucket.keys("killed/")
    for job_id, (_, files, _) in lines.items():
        assert all(f"killed/{name}" in keys for name in files), job_id
    # The restarted shard resumed from the bucket: its journal there (compacted at its end)
    # holds the intents of every job of shard 0, the dead attempt's included.
    [segment] = [k for k in keys if k.startswith("killed/.novita-shards/0-of-2/.novita-journal/")]
    stored = s3_bucket.get(segment)
    for job in jobs:
        if shard_of(job.id, 2) == 0:
            assert f'"type":"submitting","id":"{job.id}"'.encode() in stored, job.id

    # The summary counts both attempts of shard 0: the dead one's as the driver last saw it,
    # which holds the two tasks whose ends it showed (the third, if the dead attempt had sent it
    # between that look and its death, is the one that may be missing).
    assert stats["submissions"] - 1 <= summary.submitted <= stats["submissions"]
    assert summary.tasks <= stats["submissions"]
    assert summary.http_requests["submit"] >= summary.submitted
    # Each job counted once as done, though the restarted attempt replayed the dead one's.
    assert summary.jobs == len(jobs) == summary.succeeded + summary.failed
    assert summary.replayed >= 2


def test_cli_runs_the_shards_into_the_bucket_and_keeps_its_layout(
    local_ray: None, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    ids = [job.id for job in _jobs(2)]
    job_file = _job_file(tmp_path, ids)
    url = s3_bucket.url("cli")
    address = ray.get_runtime_context().gcs_address

    def run(*args: str, staging: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "novita_async", "run", str(job_file), "--out", url,
             "--no-progress", "--width", "128", "--height", "128", *args],
            env={**os.environ, **emulator.env, **s3_bucket.env,
                 "NOVITA_ASYNC_STAGING": str(tmp_path / staging)},
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip

    ray_args = ("--ray", "--ray-address", address)
    with _emulator("--task-seconds", "0") as emulator:
        done = run(*ray_args, "--shards", "2", staging="driver")
        assert done.returncode == 0, done.stderr + done.stdout
        before = emulator.stats()["submissions"]
        # Another machine (an empty staging folder): the bucket's keys say how OUT is sharded.
        three = run(*ray_args, "--shards", "3", staging="elsewhere")
        unsharded = run(staging="elsewhere-too")
        assert emulator.stats()["submissions"] == before  # refused before anything was sent
    for job_id in ids:
        assert done.stdout.count(f"succeeded {job_id} ") == 1, done.stdout
    assert f"results: {url}/results.jsonl" in done.stdout
    assert f"gallery: {url}/index.html" in done.stdout
    assert sorted(_stored_lines(s3_bucket, "cli")) == sorted(ids)
    page = s3_bucket.get("cli/index.html").decode()
    for job_id in ids:
        assert f'src="{job_id}_0.png"' in page  # relative: the page works where it is served
        assert f"cli/{job_id}_0.png" in s3_bucket.keys("cli/")
    secrets = (S3_SECRET, emulator.env["NOVITA_API_KEY"])
    for output in (done, three, unsharded):
        assert [s for s in secrets if s in output.stdout + output.stderr] == []
    _no_secret_in_the_bucket(s3_bucket, *secrets)
    assert three.returncode == 2, three.stderr
    assert "2 shards" in three.stderr and "3 shards" in three.stderr
    assert unsharded.returncode == 2, unsharded.stderr
    assert "2 shards" in unsharded.stderr and "unsharded" in unsharded.stderr
