"""What is in the bucket is the truth (``run --out s3://...`` in a subprocess, against an emulator
process and moto's S3 server): a wiped prefix is restored from the staging journal's task ids for
free and its journal rewritten; the same URL at another endpoint gets a staging folder of its own;
a store journal of another run than the staging copy is refused naming both; a bucket that does
not exist is refused before anything is paid."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import S3Bucket, create_bucket

from novita_async.emulator import EmulatorProcess

from .test_s3_cli import env_for, run_cli, write_jobs

JOBS = 6
READY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        "--seed", "4", "--task-seconds", "0.05", "--image-mode", "tiny"
    ) as running:
        yield running


@pytest.fixture
def other_s3_server() -> Iterator[str]:
    """A second S3 endpoint with buckets of its own: moto's server in its own process (moto's
    servers in one process share their buckets)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                assert server.poll() is None, "moto's server exited"
                assert time.monotonic() < deadline, "moto's server never answered"
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def submissions(emulator: EmulatorProcess) -> int:
    count: int = emulator.stats()["submissions"]
    return count


def stored_results(bucket: S3Bucket, prefix: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in bucket.get(f"{prefix}/results.jsonl").splitlines()]
    return {line["id"]: line for line in lines}


def images_of(bucket: S3Bucket, prefix: str) -> dict[str, bytes]:
    return {key: bucket.get(key) for key in bucket.keys(f"{prefix}/") if key.endswith(".png")}


def every_success_is_there(bucket: S3Bucket, prefix: str) -> dict[str, dict[str, Any]]:
    results = stored_results(bucket, prefix)
    keys = set(bucket.keys(f"{prefix}/"))
    for line in results.values():
        if line["status"] == "succeeded":
            assert {f"{prefix}/{name}" for name in line["files"]} <= keys, line
    return results


def test_a_wiped_prefix_is_restored_from_the_staging_journal_for_free(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS)
    env = env_for(emulator, s3_bucket, tmp_path / "staging")
    url = s3_bucket.url("p")
    first = run_cli("run", str(jobs), "--out", url, "--no-progress", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    images = images_of(s3_bucket, "p")
    assert len(images) == JOBS

    s3_bucket.delete_prefix("p/")  # the images, results.jsonl and the store's journal
    before = submissions(emulator)
    planned = run_cli("run", str(jobs), "--out", url, "--dry-run", "--json", env=env, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert (plan["to_restore"], plan["to_submit"], plan["done"]) == (JOBS, 0, 0)
    rerun = run_cli("run", str(jobs), "--out", url, "--no-progress", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert submissions(emulator) == before  # fetched from the tasks' results: nothing paid
    assert f"{JOBS} restored from their tasks" in rerun.stdout
    assert images_of(s3_bucket, "p") == images  # the same bytes, back in the bucket
    results = every_success_is_there(s3_bucket, "p")
    assert len(results) == JOBS and all(r["status"] == "succeeded" for r in results.values())

    # The store's journal was rewritten: a fresh machine resumes from it, and pays nothing.
    fresh = env_for(emulator, s3_bucket, tmp_path / "staging-fresh")
    again = run_cli("run", str(jobs), "--out", url, "--no-progress", env=fresh, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{JOBS} jobs: {JOBS} succeeded, 0 failed, {JOBS} from an earlier run" in again.stdout
    assert submissions(emulator) == before


def test_the_same_url_at_another_endpoint_does_not_reuse_the_staging_folder(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, other_s3_server: str, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 3)
    staging = tmp_path / "staging"
    url = s3_bucket.url("p")
    first = run_cli("run", str(jobs), "--out", url, "--no-progress",
                    env=env_for(emulator, s3_bucket, staging), cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    [kept] = list(staging.iterdir())
    journal_before = (kept / ".novita-journal.jsonl").read_bytes()

    # The same URL now names a bucket of another endpoint: it holds nothing of that run.
    other = create_bucket(other_s3_server, s3_bucket.name)
    rerun = run_cli("run", str(jobs), "--out", url, "--no-progress",
                    env=env_for(emulator, other, staging), cwd=tmp_path)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "from an earlier run" not in rerun.stdout
    assert len(list(staging.iterdir())) == 2  # a staging folder of its own
    assert (kept / ".novita-journal.jsonl").read_bytes() == journal_before
    results = every_success_is_there(other, "p")
    assert len(results) == 3 and all(r["status"] == "succeeded" for r in results.values())


def test_a_store_journal_of_another_run_than_the_staging_copy_is_refused_naming_both(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 3)
    url = s3_bucket.url("p")
    mine = env_for(emulator, s3_bucket, tmp_path / "staging-mine")
    first = run_cli("run", str(jobs), "--out", url, "--no-progress", env=mine, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # The prefix is wiped, and another machine runs the same jobs there: other tasks.
    s3_bucket.delete_prefix("p/")
    theirs = env_for(emulator, s3_bucket, tmp_path / "staging-theirs")
    second = run_cli("run", str(jobs), "--out", url, "--no-progress", env=theirs, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    stored_before = {key: s3_bucket.get(key) for key in s3_bucket.keys("p/")}
    before = submissions(emulator)

    refused = run_cli("run", str(jobs), "--out", url, "--no-progress", env=mine, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    [staging] = list((tmp_path / "staging-mine").iterdir())
    assert f"{url}/.novita-journal/" in refused.stderr
    assert str(staging / ".novita-journal.jsonl") in refused.stderr
    assert "disagree" in refused.stderr and "Nothing was sent" in refused.stderr
    assert submissions(emulator) == before
    assert {key: s3_bucket.get(key) for key in s3_bucket.keys("p/")} == stored_before


def test_a_bucket_that_does_not_exist_is_refused_before_anything_is_paid(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 3)
    before = emulator.stats()["requests"]
    url = f"s3://{s3_bucket.name}-missing/p"
    env = env_for(emulator, s3_bucket, tmp_path / "staging")
    done = run_cli("run", str(jobs), "--out", url, "--no-progress", env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "STORAGE_NOT_FOUND" in done.stderr
    assert f"the bucket '{s3_bucket.name}-missing' does not exist" in done.stderr  # the cause
    assert emulator.stats()["requests"] == before  # nothing sent, nothing paid
