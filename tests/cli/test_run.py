"""``novita-async run`` end to end against the emulator: exit codes, bad lines, resume, SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from PIL import Image

from .conftest import EmulatorProcess, cli, emulator_process


def write_jobs(folder: Path, lines: list[Any]) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def job(face: str, ref: str, **fields: Any) -> dict[str, Any]:
    return {"face_images": [f"pictures/{face}.png"], "ref_images": [f"pictures/{ref}.png"],
            "prompt": f"{face} at the {ref}", **fields}  # fmt: skip


def results(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len({r["id"] for r in records}) == len(records)  # one line per job
    return {r["id"]: r for r in records}


class Cards(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "article":
            self.cards.append(values.get("class") or "")
        if tag == "img":
            self.images.append(values.get("src") or "")


def gallery(out: Path) -> Cards:
    page = Cards()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    return page


def test_run_succeeds_writes_images_gallery_and_resumes_without_resubmitting(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [
        job("ada", "beach", id="one"),
        job("ada", "forest", id="two", image_num=2),
        job("grace", "beach"),
        job("grace", "forest", extra={"response_image_type": "jpeg"}),
    ])  # fmt: skip
    out = tmp_path / "out"
    before = emulator.stats()
    done = cli("run", str(jobs), "--out", str(out), "--width", "256", "--height", "256",
               env=emulator.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = results(out)
    assert set(records) == {"one", "two", "3", "4"}
    assert all(r["status"] == "succeeded" and r["task_id"] for r in records.values())
    assert records["two"]["files"] == ["two_0.png", "two_1.png"]
    assert records["4"]["files"] == ["4_0.jpeg"]
    for record in records.values():
        for name in record["files"]:
            with Image.open(out / name) as image:
                assert image.size == (256, 256)
    page = gallery(out)
    assert page.cards == ["card succeeded"] * 4 and len(page.images) == 5
    # Not a terminal: plain lines, no cursor movement.
    assert "\x1b[" not in done.stdout and "[4/4] succeeded" in done.stdout
    assert "4 jobs: 4 succeeded, 0 failed" in done.stdout
    after = emulator.stats()
    assert after["submissions"] - before["submissions"] == 4
    assert after["uploads"] - before["uploads"] == 4  # two faces, two scenes, each once

    again = cli("run", str(jobs), "--out", str(out), "--width", "256", "--height", "256",
                env=emulator.env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["submissions"] == after["submissions"]
    assert "from an earlier run" in again.stdout
    assert results(out) == records


def test_bad_lines_are_reported_with_line_and_field_and_the_rest_complete(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [
        job("ada", "beach", id="good"),
        '{"face_images": ["pictures/ada.png"], oops',
        job("ada", "beach", id="typo", stpes=30),
        job("ada", "beach", id="wide", width=9000),
        job("nobody", "beach", id="missing"),
        job("grace", "forest", id="fails", prompt="this one [[fail]]"),
        job("grace", "beach", id="also-good"),
    ])  # fmt: skip
    out = tmp_path / "out"
    done = cli("run", str(jobs), "--out", str(out), "--no-progress", env=emulator.env)
    assert done.returncode == 1
    said = done.stdout + done.stderr
    assert "line 2: not valid JSON" in said
    assert "line 3, field stpes: " in said and "unknown field" in said
    assert "line 4, field width: 9000 is not allowed: must be in [128, 2048]" in said
    assert "line 5, field face_images[0]: no such file" in said
    assert "Traceback" not in said
    # The summary says what each kind of failure means and what acts on it.
    assert "  4 INVALID_JOB_LINE (" in done.stdout and "fix them and rerun with --retry-failed" in (
        done.stdout
    )
    assert "  1 job failed for their own reason (TASK_FAILED: 1; " in done.stdout
    records = results(out)
    assert set(records) == {"good", "2", "typo", "wide", "missing", "fails", "also-good"}
    assert records["good"]["status"] == records["also-good"]["status"] == "succeeded"
    assert records["fails"]["error"]["reason"] == "TASK_FAILED"
    for name in ("2", "typo", "wide", "missing"):
        assert records[name]["status"] == "failed" and records[name]["task_id"] is None
        assert records[name]["error"]["reason"] == "INVALID_JOB_LINE"
    assert records["wide"]["error"]["message"] == (
        "line 4, field width: 9000 is not allowed: must be in [128, 2048]"
    )
    assert sorted(gallery(out).cards).count("card failed") == 5


def test_bad_flag_exits_2_before_any_request(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach")])
    before = emulator.stats()["requests"]
    for args in (
        ["run", str(jobs), "--out", str(tmp_path / "o"), "--steps", "101"],
        ["generate", "--face", str(pictures / "ada.png"), "--ref", str(pictures / "beach.png"),
         "--prompt", "p", "--guidance-scale", "0.5"],
    ):  # fmt: skip
        done = cli(*args, env=emulator.env)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "argument --guidance-scale: 0.5 is not allowed: must be in [1, 30]" in done.stderr
    assert emulator.stats()["requests"] == before
    assert not (tmp_path / "o").exists()


def test_missing_job_file_and_missing_key_are_usage_errors(tmp_path: Path) -> None:
    env = {"NOVITA_API_KEY": ""}
    done = cli("run", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), env=env)
    assert done.returncode == 2 and "job file" in done.stderr
    (tmp_path / "jobs.jsonl").write_text("")
    done = cli("run", str(tmp_path / "jobs.jsonl"), "--out", str(tmp_path / "o"), env=env)
    assert done.returncode == 2 and "NOVITA_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def wait_for_submission(journal: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists():
            for line in journal.read_text().splitlines():
                try:
                    if json.loads(line).get("type") == "submitted":
                        return
                except ValueError:
                    pass  # the line being written
        time.sleep(0.02)  # polling the journal for a condition, not waiting for time to pass
    raise AssertionError("no submission was journaled")


def signalled_run(
    command: list[str], env: dict[str, str], out: Path, signum: int
) -> tuple[int, str, str]:
    """Start ``command`` (a ``run`` into ``out``), send it ``signum`` once its first submission is
    journaled, and return its exit status, stdout and stderr; the process is reaped on every
    path (a guard of 60 s against a hang, not a measure)."""
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_submission(out / ".novita-journal.jsonl", process)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def test_sigint_exits_130_and_a_rerun_resumes_without_resubmitting(
    tmp_path: Path, pictures: Path
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a"), job("grace", "beach", id="b")])
    out = tmp_path / "out"
    with emulator_process("--task-seconds", "2", "--image-mode", "tiny") as slow:
        command = [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
                   "--concurrency", "1", "--width", "128", "--height", "128"]  # fmt: skip
        status, stdout, stderr = signalled_run(command, slow.env, out, signal.SIGINT)
        assert status == 130, stderr
        assert "rerun the same command to resume" in stdout
        assert "Traceback" not in stderr
        assert slow.stats()["submissions"] == 1
        assert (out / "index.html").exists()

        rerun = cli(*command[3:], env=slow.env)
        assert rerun.returncode == 0, rerun.stderr
        stats = slow.stats()
        assert stats["submissions"] == 2 and stats["duplicate_submissions"] == 0
    records = results(out)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    assert set(records) == {"a", "b"}


def test_batch_flags_reach_the_runner(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="one"), job("grace", "forest", id="two")])
    out, journal = tmp_path / "out", tmp_path / "state" / "journal.jsonl"
    journal.parent.mkdir()
    done = cli("run", str(jobs), "--out", str(out), "--width", "128", "--height", "128",
               "--journal", str(journal), "--submit-concurrency", "1", "--stop-grace", "5",
               env=emulator.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (out / ".novita-journal.jsonl").exists()
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in records if r["type"] == "succeeded") == ["one", "two"]
