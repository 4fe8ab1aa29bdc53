"""``novita-async status OUT`` on a folder in each state, and ``novita-async journal repair OUT``:
a damaged journal refused by ``run``, reported by ``status``, repaired, and a run that works after.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from novita_async.batch import JobError, JobOutcome, JobStatus
from novita_async.batch._journal import JOURNAL_NAME, Journal

from .conftest import EmulatorProcess, cli
from .test_reporting import run_main
from .test_run import job, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")


def status_of(out: Path, *more: str) -> tuple[int, str]:
    code, said, err = run_main(["status", str(out), *more])
    assert err == ""
    return code, said


def status_json(out: Path, *more: str, exit_status: int = 0) -> dict[str, Any]:
    code, said = status_of(out, "--json", *more)
    assert code == exit_status
    parsed: dict[str, Any] = json.loads(said)
    return parsed


def row(said: str, label: str) -> str:
    """The status line of ``label``'s row."""
    (line,) = [line.strip() for line in said.splitlines() if line.strip().startswith(label)]
    return line


def journal_records(out: Path) -> list[dict[str, Any]]:
    text = (out / JOURNAL_NAME).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def until(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.02)  # polling the journal for a condition, not waiting for time to pass
    raise AssertionError("the run never got there")


def test_a_fresh_folder_has_no_journal_and_no_jobs(tmp_path: Path) -> None:
    code, said = status_of(tmp_path)
    assert code == 0
    assert "no journal: nothing has run here yet" in said
    assert row(said, "jobs known").split() == ["jobs", "known", "0"]
    parsed = status_json(tmp_path)
    assert (parsed["journal_found"], parsed["jobs"], parsed["last_run"]) == (False, 0, None)
    assert parsed["never_submitted"] is None and parsed["in_use"] is False
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_with_failures_by_reason_and_its_summary_json(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [
        job("ada", "beach", id="one", image_num=2),
        job("grace", "forest", id="two"),
        job("ada", "forest", id="fails", prompt="this one [[fail]]"),
        job("nobody", "beach", id="missing"),
    ])  # fmt: skip
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    done = cli("run", str(jobs), "--out", str(out), "--summary-json", str(summary), *SMALL,
               env=emulator.env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "4 jobs: 2 succeeded, 2 failed" in done.stdout  # the text summary as well
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert report["exit_status"] == 1 and report["stop"] is None and report["error"] is None
    assert report["summary"]["jobs"] == 4 and report["summary"]["succeeded"] == 2
    assert report["summary"]["failures_by_reason"] == {"INVALID_JOB_LINE": 1, "TASK_FAILED": 1}
    assert report["results"] == str(out / "results.jsonl")
    assert report["gallery"] == str(out / "index.html")

    code, said = status_of(out)
    assert code == 0
    assert row(said, "succeeded") == "succeeded                  2  (3 images on disk)"
    assert row(said, "failed") == (
        "failed                     2  (INVALID_JOB_LINE: 1, TASK_FAILED: 1)"
    )
    assert "never submitted" not in said and "unknown outcome" not in said
    assert "last written" in said and "holding" not in said

    with jobs.open("a", encoding="utf-8") as more:  # a line the run has not reached
        more.write(json.dumps(job("grace", "beach")) + "\n")
    parsed = status_json(out, "--jobs", str(jobs))
    assert parsed["never_submitted"] == 1
    assert (parsed["jobs"], parsed["succeeded"], parsed["failed"], parsed["images"]) == (4, 2, 2, 3)
    assert parsed["failures_by_reason"] == {"INVALID_JOB_LINE": 1, "TASK_FAILED": 1}
    assert parsed["results_listed"] == 4 and parsed["damaged_lines"] == []
    assert parsed["last_run"].endswith("+00:00")
    assert row(status_of(out, "--jobs", str(jobs))[1], "never submitted").startswith(
        "never submitted            1"
    )


def test_a_run_in_progress_then_interrupted_and_its_summary_json(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [
        job("ada", "beach", id="quick"),
        job("grace", "forest", id="slow", prompt="a task that takes an hour [[seconds:3600]]"),
    ])  # fmt: skip
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    command = [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
               "--summary-json", str(summary), *SMALL]  # fmt: skip
    process = subprocess.Popen(
        command, env={**os.environ, **emulator.env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def slow_submitted_and_quick_done() -> bool:
        if not (out / JOURNAL_NAME).exists():
            return False
        seen = {(r.get("type"), r.get("id")) for r in _complete_records(out)}
        return {("submitted", "slow"), ("succeeded", "quick")} <= seen

    try:
        until(slow_submitted_and_quick_done, process)
        code, said = status_of(out)
        assert code == 0
        assert "by a run holding the folder now" in said
        assert row(said, "submitted, not ended") == (
            "submitted, not ended       1  (the run follows their tasks)"
        )
        assert status_json(out)["in_use"] is True
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stdout

    report = json.loads(summary.read_text(encoding="utf-8"))
    assert report["exit_status"] == 130 and report["summary"]["interrupted"] is True
    assert report["summary"]["succeeded"] == 1 and report["stop"] is None

    code, said = status_of(out)
    assert code == 0 and "holding" not in said
    assert row(said, "submitted, not ended") == (
        "submitted, not ended       1  (a rerun follows their tasks)"
    )
    parsed = status_json(out)
    assert (parsed["in_use"], parsed["unfinished"], parsed["succeeded"]) == (False, 1, 1)


def _complete_records(out: Path) -> list[dict[str, Any]]:
    """The journal's whole lines (the run may be writing its last one)."""
    data = (out / JOURNAL_NAME).read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def test_unknown_outcome_and_retryable_jobs_say_what_a_rerun_does(tmp_path: Path) -> None:
    unknown = JobError("SubmitOutcomeUnknownError", "SUBMIT_OUTCOME_UNKNOWN", "no answer")
    exhausted = JobError("RetriesExhaustedError", "RETRIES_EXHAUSTED", "gave up")
    with Journal(tmp_path / JOURNAL_NAME) as journal:
        journal.record_submitting("intent", None)  # killed before the POST's answer was recorded
        journal.record_outcome(JobOutcome("lost", JobStatus.FAILED, error=unknown), None)
        journal.record_outcome(JobOutcome("flaky", JobStatus.FAILED, error=exhausted), None)
    code, said = status_of(tmp_path)
    assert code == 0
    assert row(said, "unknown outcome").startswith(
        "unknown outcome            2  (a task may exist and be billed; look before paying again: "
        "rerun with --retry-unknown-submits"
    )
    assert row(said, "retryable") == (
        "retryable                  1  (RETRIES_EXHAUSTED: a plain rerun tries them again)"
    )
    parsed = status_json(tmp_path)
    assert (parsed["jobs"], parsed["unanswered"], parsed["unknown_outcome"]) == (3, 1, 2)
    assert (parsed["failed"], parsed["retryable"]) == (2, 1)


def damage(path: Path, *, garbage: int, zeroes: int) -> bytes:
    """Line ``garbage`` (from 1) replaced by garbage, line ``zeroes`` by zero bytes."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[garbage - 1] = b"}{ not a record\n"
    lines[zeroes - 1] = bytes(len(lines[zeroes - 1]) - 1) + b"\n"
    damaged = b"".join(lines)
    path.write_bytes(damaged)
    return damaged


def test_a_damaged_journal_is_refused_reported_repaired_and_the_run_goes_on(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a"), job("grace", "forest", id="b")])
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    first = cli("run", str(jobs), "--out", str(out), *SMALL, env=emulator.env)
    assert first.returncode == 0, first.stderr
    records = journal_records(out)
    ended = [n for n, r in enumerate(records, start=1) if r["type"] == "succeeded"]
    journal = out / JOURNAL_NAME
    damaged = damage(journal, garbage=ended[0], zeroes=ended[1])
    before = emulator.stats()

    refused = cli("run", str(jobs), "--out", str(out), "--summary-json", str(summary), *SMALL,
                  env=emulator.env)  # fmt: skip
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"novita-async: error: the journal {journal} is damaged: lines ")
    assert f"Run `novita-async journal repair {out}`" in line
    assert emulator.stats()["requests"] == before["requests"]  # nothing was sent
    assert journal.read_bytes() == damaged
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert (report["exit_status"], report["summary"]) == (2, None)
    assert report["error"] == line.removeprefix("novita-async: error: ")

    code, said = status_of(out)
    assert code == 1
    assert f"the journal is damaged: 2 lines ({ended[0]}, {ended[1]}) cannot be read" in said
    assert f"`novita-async journal repair {out}`" in said
    parsed = status_json(out, "--journal", str(journal), exit_status=1)
    assert parsed["damaged_lines"] == ended and parsed["succeeded"] == 0

    code, said, err = run_main(["journal", "repair", str(out)])
    assert (code, err) == (0, "")
    lines = said.splitlines()
    assert lines[0] == f"{journal}: repaired; {len(records) - 2} good records kept"
    assert lines[1] == f"  damaged lines: {ended[0]}, {ended[1]}"
    assert lines[2] == f"  lines naming no job that could be read: {ended[0]}, {ended[1]} " + (
        "(look at them in the damaged original)"
    )
    backup = Path(lines[3].removeprefix("  the damaged original is kept as "))
    assert backup.parent == out and backup.read_bytes() == damaged

    # Both jobs' tasks are in the journal still: the run follows them, paying for none again.
    rerun = cli("run", str(jobs), "--out", str(out), *SMALL, env=emulator.env)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 jobs: 2 succeeded, 0 failed" in rerun.stdout
    assert emulator.stats()["submissions"] == before["submissions"]
    code, said = status_of(out)
    assert code == 0 and "the journal is damaged" not in said
    assert row(said, "succeeded") == "succeeded                  2  (2 images on disk)"


def test_journal_repair_names_the_jobs_it_marks_and_refuses_a_journal_in_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "elsewhere.jsonl"
    with Journal(path) as journal:
        journal.record_submitting("x", None)
        journal.record_submitting("y", None)
        journal.record_submitted("y", "task-y", None)
    lines = path.read_bytes().splitlines(keepends=True)
    # Still names x, but its checksum no longer holds: x's intent is lost.
    lines[0] = lines[0].replace(b'"submitting"', b'"submitted"')
    path.write_bytes(b"".join(lines))

    with path.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a run holding it does
        code, said, err = run_main(["journal", "repair", str(tmp_path), "--journal", str(path)])
    assert (code, said) == (2, "")
    assert err == (
        f"novita-async: error: {path} is in use by a run; repair it once the run has ended\n"
    )

    code, said, err = run_main(["journal", "repair", str(tmp_path), "--journal", str(path)])
    assert (code, err) == (0, "")
    assert "  marked SUBMIT_OUTCOME_UNKNOWN: x (a task may exist and be billed" in said
    assert "lines naming no job" not in said
    code, said, _ = run_main(["journal", "repair", str(tmp_path), "--journal", str(path)])
    assert code == 0 and said.endswith("nothing to repair\n")


def test_no_journal_to_repair_is_a_usage_error(tmp_path: Path) -> None:
    code, said, err = run_main(["journal", "repair", str(tmp_path)])
    assert (code, said) == (2, "")
    assert err == f"novita-async: error: there is no journal at {tmp_path / JOURNAL_NAME}\n"
