"""``novita-async run --out s3://...`` in a subprocess, against an emulator process and moto's
S3 server: the gallery and results in the bucket, credentials in no output, URLs it cannot write
refused before anything is sent, and a kill -9 resumed from the bucket alone."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image
from support import S3_SECRET, S3Bucket, reap

from novita_async.emulator import EmulatorProcess

JOBS = 24
WATCH_INTERVAL = 0.01  # how often the emulator's counters are looked at while waiting to kill


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--seed", "3", "--task-seconds", "0.3", "--image-mode", "tiny") as running:
        yield running


def write_jobs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(3):
        Image.new("RGB", (16, 16), (60 * n, 120, 200)).save(folder / f"face{n}.png")
    path = folder / "jobs.jsonl"
    with path.open("w") as lines:
        for n in range(count):
            job = {
                "id": f"job{n:03d}",
                "face_images": [f"face{n % 3}.png"],
                "ref_images": [f"face{(n + 1) % 3}.png"],
                "prompt": f"s3 job {n}",
                "width": 128,
                "height": 128,
            }
            lines.write(json.dumps(job) + "\n")
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "novita_async", *args]


def env_for(emulator: EmulatorProcess, bucket: S3Bucket, staging: Path) -> dict[str, str]:
    return {
        **os.environ,
        **emulator.env,
        **bucket.env,
        "NOVITA_ASYNC_STAGING": str(staging),
    }


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def requests_seen(emulator: EmulatorProcess) -> dict[str, dict[str, int]]:
    requests: dict[str, dict[str, int]] = emulator.stats()["requests"]
    return requests


def secrets_in(data: bytes, *secrets: str) -> list[str]:
    return [secret for secret in secrets if secret.encode() in data]


@pytest.mark.parametrize(
    ("out", "named"), [("ftp://x/y", "'ftp'"), ("s3:/x", "'s3'"), ("gopher://h/p", "'gopher'")]
)
def test_a_destination_it_cannot_write_is_refused_before_anything_is_sent(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path, out: str, named: str
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 2)
    before = requests_seen(emulator)
    done = run_cli(
        "run",
        str(jobs),
        "--out",
        out,
        env=env_for(emulator, s3_bucket, tmp_path / "st"),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert requests_seen(emulator) == before  # nothing reached the emulator
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"]  # no folder "ftp:" or "s3:"


def test_status_of_a_url_says_it_reads_local_folders(tmp_path: Path) -> None:
    done = run_cli("status", "s3://bucket/run", env=dict(os.environ), cwd=tmp_path)
    assert done.returncode == 2
    assert "s3:// outputs are not read by `status`" in done.stderr


def test_a_run_into_the_bucket_with_its_gallery_and_no_secret_anywhere(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 4)
    staging = tmp_path / "staging"
    env = env_for(emulator, s3_bucket, staging)
    done = run_cli(
        "run",
        str(jobs),
        "--out",
        s3_bucket.url("gallery"),
        "--no-progress",
        "--debug",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    url = s3_bucket.url("gallery")
    assert f"results: {url}/results.jsonl" in done.stdout
    assert f"gallery: {url}/index.html" in done.stdout
    keys = s3_bucket.keys("gallery/")
    images = [f"gallery/job{n:03d}_0.png" for n in range(4)]
    assert set(images) <= set(keys)
    assert {"gallery/results.jsonl", "gallery/index.html"} <= set(keys)
    page = s3_bucket.get("gallery/index.html").decode()
    for n in range(4):
        assert f'src="job{n:03d}_0.png"' in page  # relative: the page works where it is served
    secrets = (S3_SECRET, emulator.env["NOVITA_API_KEY"])
    assert secrets_in((done.stdout + done.stderr).encode(), *secrets) == []
    for key in keys:
        assert secrets_in(s3_bucket.get(key), *secrets) == [], key
    local = [path for path in staging.rglob("*") if path.is_file()]
    assert local  # the staging copies of the journal and results
    for path in local:
        assert secrets_in(path.read_bytes(), *secrets) == [], path


class _NoInstanceRole(http.server.BaseHTTPRequestHandler):
    """An instance-metadata service off EC2 (what the network at 169.254.169.254 answers on
    many machines): 403 to every request, each one's method and path noted."""

    asked: ClassVar[list[str]] = []

    def _refuse(self) -> None:
        self.asked.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def no_instance_role() -> Iterator[tuple[str, list[str]]]:
    """A loopback stand-in for the instance-metadata service (the test sends nothing to
    169.254.169.254); its URL, and the requests it got."""
    asked: list[str] = []
    handler = type("Handler", (_NoInstanceRole,), {"asked": asked})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_no_credentials_stop_the_run_naming_them_before_anything_is_paid(
    emulator: EmulatorProcess,
    s3_bucket: S3Bucket,
    no_instance_role: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    jobs = write_jobs(tmp_path / "jobs", 2)
    metadata, asked = no_instance_role
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(emulator.env)
    env.update(
        AWS_ENDPOINT_URL=s3_bucket.endpoint,
        AWS_ALLOW_HTTP="true",
        AWS_REGION="us-east-1",
        AWS_METADATA_ENDPOINT=metadata,  # where obstore looks for an instance role last
        NOVITA_ASYNC_STAGING=str(tmp_path / "staging"),
    )
    before = emulator.stats()["submissions"]
    done = run_cli("run", str(jobs), "--out", s3_bucket.url("portraits"), "--no-progress",
                   env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "no credentials for the store were found" in done.stderr, done.stderr
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in done.stderr
    assert "STORAGE_PERMISSION" in done.stderr
    assert "PUT /latest/api/token" in asked  # the role was looked for, on loopback
    assert emulator.stats()["submissions"] == before  # nothing paid


def test_a_kill_9_resumes_from_the_bucket_on_a_fresh_machine(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS)
    url = s3_bucket.url("crash")
    before = emulator.stats()["submissions"]
    first = subprocess.Popen(
        command("run", str(jobs), "--out", url, "--no-progress", "--concurrency", "6"),
        env=env_for(emulator, s3_bucket, tmp_path / "staging-1"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed once a third of the jobs have been submitted: tasks are in flight then.
        while emulator.stats()["submissions"] - before < JOBS // 3:
            assert first.poll() is None, "the run ended before it could be killed"
            time.sleep(WATCH_INTERVAL)
        first.send_signal(signal.SIGKILL)
    finally:
        reap(first)  # killed here too if a check above failed
    assert first.returncode == -signal.SIGKILL
    assert "crash/results.jsonl" not in s3_bucket.keys("crash/")

    # Another staging folder: what the rerun knows comes from the bucket's journal segments.
    rerun = run_cli(
        "run",
        str(jobs),
        "--out",
        url,
        "--no-progress",
        env=env_for(emulator, s3_bucket, tmp_path / "staging-2"),
        cwd=tmp_path,
    )
    assert rerun.returncode in (0, 1), rerun.stderr
    stats = emulator.stats()
    assert stats["duplicate_submissions"] == 0
    lines = [json.loads(line) for line in s3_bucket.get("crash/results.jsonl").splitlines()]
    assert sorted(line["id"] for line in lines) == [f"job{n:03d}" for n in range(JOBS)]
    keys = set(s3_bucket.keys("crash/"))
    for line in lines:
        if line["status"] == "succeeded":
            assert {f"crash/{name}" for name in line["files"]} <= keys
        else:  # a POST in flight when the kill landed: reported, never paid for again
            assert line["error"]["reason"] == "SUBMIT_OUTCOME_UNKNOWN"
    unknown = sum(line["status"] != "succeeded" for line in lines)
    assert stats["submissions"] - before <= JOBS
    assert stats["submissions"] - before >= JOBS - unknown


def test_shards_run_by_hand_into_the_bucket_merge_every_shards_results(
    emulator: EmulatorProcess, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    # Each shard on its "own machine" (its own staging folder): the merge reads the store.
    jobs = write_jobs(tmp_path / "jobs", 6)
    url = s3_bucket.url("by-hand")
    ids = {f"job{n:03d}" for n in range(6)}
    for k in range(2):
        env = env_for(emulator, s3_bucket, tmp_path / f"staging-{k}")
        done = run_cli(
            "run", str(jobs), "--out", url, "--shard", f"{k}/2", "--no-progress",
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        merged = [json.loads(line) for line in s3_bucket.get("by-hand/results.jsonl").splitlines()]
        # After the first shard, its own jobs; after the second, every job, each once.
        assert len({line["id"] for line in merged}) == len(merged)
    assert {line["id"] for line in merged} == ids
    assert all(line["status"] == "succeeded" for line in merged)
    assert {f"by-hand/{job}_0.png" for job in ids} <= set(s3_bucket.keys("by-hand/"))
