"""A reader of the command's output that went away (``... | head -1``): the command ends quietly,
with the status a shell shows for a Unix tool killed by SIGPIPE (141)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EmulatorProcess, cli


def _into_a_pipe_nobody_reads(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``novita-async ARGS`` with stdout a pipe whose reader has gone (closed before the command
    writes, so the outcome does not depend on how fast either side is)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "novita_async", *args],
            env={**os.environ, **env},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


def _ended_quietly(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 141, done.stderr
    for noise in ("Broken pipe", "BrokenPipeError", "Traceback", "error", "Exception ignored"):
        assert noise not in done.stderr, done.stderr


def test_result_json_into_a_closed_pipe_ends_quietly(
    pictures: Path, tmp_path: Path, emulator: EmulatorProcess
) -> None:
    made = cli(
        "generate", "--face", str(pictures / "ada.png"), "--ref", str(pictures / "beach.png"),
        "--prompt", "p", "--width", "128", "--height", "128", "--out", str(tmp_path / "out"),
        env=emulator.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    task_id = made.stderr.split("submitted task ", 1)[1].split()[0]
    # A document smaller than a pipe's buffer: the closed pipe is met at the last flush.
    _ended_quietly(_into_a_pipe_nobody_reads("result", task_id, "--json", env=emulator.env))
    shown = cli("result", task_id, "--json", env=emulator.env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["task"]["task_id"] == task_id


@pytest.mark.parametrize("jobs", [1, 3000], ids=["short", "longer-than-a-buffer"])
def test_dry_run_json_into_a_closed_pipe_ends_quietly(
    pictures: Path, tmp_path: Path, jobs: int
) -> None:
    job_file = tmp_path / "jobs.jsonl"
    job_file.write_text(
        "".join(
            json.dumps({"id": f"job-{n}", "face_images": [str(pictures / "ada.png")],
                        "ref_images": [str(pictures / "missing.png")], "prompt": "p"}) + "\n"
            for n in range(jobs)
        )
    )  # fmt: skip
    args = ("run", str(job_file), "--out", str(tmp_path / "out"), "--dry-run", "--json")
    _ended_quietly(_into_a_pipe_nobody_reads(*args, env={}))
    # The same command whose reader stays: the document, every job named (none can run).
    shown = cli(*args)
    assert shown.returncode == 1
    assert len(json.loads(shown.stdout)["problems"]) == jobs


def test_a_run_whose_reader_went_away_finishes_its_work_quietly(
    pictures: Path, tmp_path: Path, emulator: EmulatorProcess
) -> None:
    job_file = tmp_path / "jobs.jsonl"
    ids = [f"job-{n}" for n in range(3)]
    job_file.write_text(
        "".join(
            json.dumps({"id": i, "face_images": [str(pictures / "ada.png")],
                        "ref_images": [str(pictures / "beach.png")], "prompt": "p",
                        "width": 128, "height": 128}) + "\n"
            for i in ids
        )
    )  # fmt: skip
    out = tmp_path / "out"
    # The progress lines go to stdout (no --json): each one meets the closed pipe.
    done = _into_a_pipe_nobody_reads("run", str(job_file), "--out", str(out), env=emulator.env)
    _ended_quietly(done)
    # The run's work is OUT, not its lines: every job ended, as with a reader.
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["status"]) for r in results) == [(i, "succeeded") for i in ids]
