"""A run that stops early says how many of the job file's jobs it never reached, in its text
summary and its JSON report, and the report's counts add up to the file's jobs."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import cli, emulator_process
from .test_run import job, signalled_run, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")
JOBS = 30
# Two workers read the file: the run holds at most a few of its jobs when it stops.
FEW = ("--concurrency", "1", "--upload-concurrency", "1")


def many_jobs(folder: Path) -> Path:
    return write_jobs(folder, [job("ada", "beach", id=f"j{n}") for n in range(JOBS)])


def check_headline(stdout: str, report: dict[str, Any]) -> None:
    summary = report["summary"]
    ended, not_finished, not_reached = (
        summary["jobs"], summary["not_finished"], summary["not_reached"],
    )  # fmt: skip
    assert ended + not_finished + not_reached == JOBS, summary
    assert not_reached > 0 and ended < JOBS
    headline = stdout.splitlines()
    assert f"{ended} of {JOBS} jobs ended: " in stdout, stdout
    assert f"{ended} jobs: " not in stdout
    (line,) = [text for text in headline if "not reached" in text]
    assert line.startswith(f"  {not_reached} not reached (") and "rerun to continue" in line


@pytest.mark.parametrize(
    ("emulator_options", "run_options", "status"),
    [
        ((), ("--max-tasks", "2"), 4),
        (("--account-error", "after=2"), (), 3),
    ],
    ids=["budget", "account"],
)
def test_a_stopped_run_counts_the_jobs_it_never_reached(
    tmp_path: Path, pictures: Path, emulator_options: tuple[str, ...],
    run_options: tuple[str, ...], status: int,
) -> None:  # fmt: skip
    jobs, out, report = many_jobs(tmp_path), tmp_path / "out", tmp_path / "summary.json"
    with emulator_process(
        "--task-seconds", "0.05", "--image-mode", "tiny", *emulator_options
    ) as emu:
        done = cli("run", str(jobs), "--out", str(out), *FEW, *run_options, *SMALL,
                   "--summary-json", str(report), env=emu.env)  # fmt: skip
    assert done.returncode == status, done.stdout + done.stderr
    check_headline(done.stdout, json.loads(report.read_text(encoding="utf-8")))


def test_an_interrupted_run_counts_the_jobs_it_never_reached_and_those_it_left(
    tmp_path: Path, pictures: Path
) -> None:
    jobs, out, report = many_jobs(tmp_path), tmp_path / "out", tmp_path / "summary.json"
    with emulator_process("--task-seconds", "600", "--image-mode", "tiny") as slow:
        command = [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
                   *FEW, *SMALL, "--summary-json", str(report)]  # fmt: skip
        status, stdout, stderr = signalled_run(command, slow.env, out, signal.SIGINT)
    assert status == 130, stdout + stderr
    summary = json.loads(report.read_text(encoding="utf-8"))["summary"]
    # The submitted job was begun and left unrecorded: not finished, not forgotten.
    assert summary["not_finished"] >= 1
    check_headline(stdout, {"summary": summary})
