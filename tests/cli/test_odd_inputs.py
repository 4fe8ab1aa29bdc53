"""What a job file can hold that a run must survive, end to end: an input that is a FIFO (opening
it would wait for a writer for ever), ids with control characters (printed raw they would break
the display and forge lines)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import EmulatorProcess, cli
from .test_run import job, results, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")


def guarded(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cli(ARGS)``, killed if it has not ended within a minute: a guard against a hang (the
    run takes seconds), not a timing assertion."""
    return cli(*args, env=env, timeout=60)


def fifo_jobs(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "pictures" / "pipe.png")
    return write_jobs(tmp_path, [
        job("ada", "beach", id="good"),
        job("pipe", "beach", id="piped"),
        job("grace", "forest", id="also-good"),
    ])  # fmt: skip


def test_a_fifo_as_a_face_image_fails_its_job_and_the_others_run(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = fifo_jobs(tmp_path), tmp_path / "out"
    before = emulator.stats()
    done = guarded("run", str(jobs), "--out", str(out), *SMALL, env=emulator.env)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said
    records = results(out)
    assert records["good"]["status"] == records["also-good"]["status"] == "succeeded"
    piped = records["piped"]
    assert piped["status"] == "failed" and piped["task_id"] is None
    assert "pipe.png" in piped["error"]["message"]
    assert "not a regular file" in piped["error"]["message"]
    after = emulator.stats()
    assert after["submissions"] - before["submissions"] == 2
    assert after["uploads"] - before["uploads"] == 4  # the two good jobs' faces and scenes


def test_a_fifo_as_a_face_image_is_listed_invalid_by_a_dry_run(
    tmp_path: Path, pictures: Path
) -> None:
    jobs, out = fifo_jobs(tmp_path), tmp_path / "out"
    done = guarded("run", str(jobs), "--out", str(out), "--dry-run", *SMALL)
    assert done.returncode == 1, done.stdout + done.stderr
    (problem,) = [line for line in done.stdout.splitlines() if line.startswith("  piped: ")]
    assert "pipe.png" in problem and "not a regular file" in problem
    assert "2 to submit" in done.stdout
