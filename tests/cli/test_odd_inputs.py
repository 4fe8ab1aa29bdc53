"""What a job file can hold that a run must survive, end to end: an input that is a FIFO (opening
it would wait for a writer for ever), ids with control characters (printed raw they would break
the display and forge lines)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import EmulatorProcess, cli, emulator_process
from .test_run import job, results, signalled_run, write_jobs

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


# Control characters a terminal acts on (\n aside: it ends each line of the output itself), and
# the line separators and bidirectional overrides that rearrange or forge what a reader sees.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def controlled_jobs(folder: Path) -> Path:
    return write_jobs(folder, [
        job("ada", "beach", id="a\nb"),
        job("ada", "beach", id="\x1b[2J"),
        job("ada", "beach", id="fine", **{"st\x1b[31meps": 30}),
        job("grace", "forest", id="x\u202ey", prompt="p\r\x07"),
        job("grace", "beach", id="good"),
    ])  # fmt: skip


def no_raw_control(done: subprocess.CompletedProcess[str]) -> str:
    said = done.stdout + done.stderr
    assert not RAW_CONTROL.findall(said), said
    assert "Traceback" not in said
    return said


def test_ids_and_messages_with_control_characters_are_shown_escaped(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs, out = controlled_jobs(tmp_path), tmp_path / "out"
    dry = guarded("run", str(jobs), "--out", str(out), "--dry-run", *SMALL[:4])
    assert dry.returncode == 1, dry.stdout + dry.stderr
    said = no_raw_control(dry)
    assert "a\\nb" in said and "\\x1b[2J" in said and "st\\x1b[31meps" in said
    as_json = guarded("run", str(jobs), "--out", str(out), "--dry-run", "--json", *SMALL[:4])
    no_raw_control(as_json)  # JSON escapes them its own way
    problems = json.loads(as_json.stdout)["problems"]
    assert {p["job_id"] for p in problems} == {"a\nb", "\x1b[2J", "fine"}
    done = guarded("run", str(jobs), "--out", str(out), *SMALL, env=emulator.env)
    assert done.returncode == 1, done.stdout + done.stderr
    said = no_raw_control(done)
    assert "a\\nb" in said and "\\x1b[2J" in said and "st\\x1b[31meps" in said
    assert "x\\u202ey" in said
    # The one thing a run prints per job: its line, with the id escaped, never split.
    (line,) = [text for text in done.stdout.splitlines() if "a\\nb" in text and "failed" in text]
    assert "INVALID_JOB_LINE" in line
    records = results(out)
    assert records["good"]["status"] == "succeeded"
    assert records["a\nb"]["error"]["reason"] == "INVALID_JOB_LINE"  # the file keeps the id
    status = guarded("status", str(out), "--jobs", str(jobs), env=emulator.env)
    assert status.returncode == 0, status.stdout + status.stderr
    no_raw_control(status)


def test_sigterm_ends_a_run_whose_job_file_names_a_fifo(tmp_path: Path, pictures: Path) -> None:
    jobs, out = fifo_jobs(tmp_path), tmp_path / "out"
    with emulator_process("--task-seconds", "600", "--image-mode", "tiny") as slow:
        command = [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
                   "--concurrency", "1", *SMALL]  # fmt: skip
        status, stdout, stderr = signalled_run(command, slow.env, out, signal.SIGTERM)
    assert status == 130, stdout + stderr
    assert "rerun the same command to resume" in stdout
    assert "Traceback" not in stderr
