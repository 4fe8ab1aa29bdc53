"""``novita-async run`` when things go wrong, end to end against an emulator process: a run-level
cause stops the run with exit status 3 and one line naming it, a plain rerun continues with no
duplicate submission, a pause shows in the log, and Ctrl-C pressed three times."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import EmulatorProcess, cli, emulator_process
from .test_run import job, results, write_jobs

GOOD_KEY = "sk-good-0123456789abcdef"
WRONG_KEY = "sk-wrong-0123456789abcdef"
SMALL = ("--width", "128", "--height", "128", "--no-progress")
# Longer than any test: a parked submission is answered only when the test says so.
HOLD = "delay:86400"


@pytest.fixture
def keyed_emulator() -> Iterator[EmulatorProcess]:
    """An emulator of its own (tests here change its faults), accepting only GOOD_KEY."""
    with emulator_process(
        "--api-key", GOOD_KEY, "--task-seconds", "0.05", "--image-mode", "tiny"
    ) as running:
        yield running


def four_jobs(folder: Path) -> Path:
    return write_jobs(folder, [
        job("ada", "beach", id="a"), job("ada", "forest", id="b"),
        job("grace", "beach", id="c"), job("grace", "forest", id="d"),
    ])  # fmt: skip


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("novita-async: ")]


def assert_stopped(done: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit status 3 and one line on stderr naming the cause, the fix and that a rerun goes on."""
    said = done.stdout + done.stderr
    assert done.returncode == 3, said
    (line,) = error_lines(done)
    assert done.stderr.splitlines() == [line]  # the one line: no log line repeating it
    assert line.startswith("novita-async: error: run stopped: ")
    for phrase in (*phrases, "rerun to continue"):
        assert phrase in line, line
    assert "Traceback" not in said and "ExceptionGroup" not in said
    return line


def nothing_failed(out: Path) -> None:
    """No job is recorded failed: the run's fault is not the jobs'."""
    if (out / "results.jsonl").exists():
        assert all(r["status"] == "succeeded" for r in results(out).values())


def test_a_wrong_key_stops_the_run_and_a_rerun_with_the_right_key_finishes(
    tmp_path: Path, pictures: Path, keyed_emulator: EmulatorProcess
) -> None:
    jobs, out = four_jobs(tmp_path), tmp_path / "out"
    wrong = {**keyed_emulator.env, "NOVITA_API_KEY": WRONG_KEY}
    done = cli("run", str(jobs), "--out", str(out), *SMALL, env=wrong)
    line = assert_stopped(
        done, "the service refused the API key (403 INVALID_API_KEY)", "check NOVITA_API_KEY",
        "0 tasks submitted",
    )  # fmt: skip
    assert WRONG_KEY not in done.stdout + done.stderr
    assert "not finished (the run stopped; rerun to continue)" in done.stdout, line
    nothing_failed(out)
    assert keyed_emulator.stats()["submissions"] == 0

    right = {**keyed_emulator.env, "NOVITA_API_KEY": GOOD_KEY}
    rerun = cli("run", str(jobs), "--out", str(out), *SMALL, env=right)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "4 jobs: 4 succeeded, 0 failed" in rerun.stdout
    assert {r["status"] for r in results(out).values()} == {"succeeded"}
    stats = keyed_emulator.stats()
    assert stats["submissions"] == 4 and stats["duplicate_submissions"] == 0


def test_the_balance_running_out_stops_the_run_and_a_plain_rerun_finishes(
    tmp_path: Path, pictures: Path, keyed_emulator: EmulatorProcess
) -> None:
    jobs, out = four_jobs(tmp_path), tmp_path / "out"
    env = {**keyed_emulator.env, "NOVITA_API_KEY": GOOD_KEY}
    keyed_emulator.control("POST", "/__emulator/account-error", {"after": 2})
    done = cli("run", str(jobs), "--out", str(out), "--concurrency", "1", *SMALL, env=env)
    assert_stopped(
        done, "the account's balance has run out (400 BILLING_BALANCE_NOT_ENOUGH)", "top it up",
        "2 tasks submitted",
    )  # fmt: skip
    nothing_failed(out)
    assert keyed_emulator.stats()["submissions"] == 2

    keyed_emulator.clear_faults()  # topped up
    rerun = cli("run", str(jobs), "--out", str(out), *SMALL, env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "4 jobs: 4 succeeded, 0 failed" in rerun.stdout
    stats = keyed_emulator.stats()
    assert stats["submissions"] == 4 and stats["duplicate_submissions"] == 0


def test_a_long_retry_after_pauses_the_run_for_the_cap_and_says_so(
    tmp_path: Path, pictures: Path, keyed_emulator: EmulatorProcess
) -> None:
    jobs, out = four_jobs(tmp_path), tmp_path / "out"
    env = {**keyed_emulator.env, "NOVITA_API_KEY": GOOD_KEY}
    keyed_emulator.set_faults("submit", script=["429:86400"])
    done = cli("run", str(jobs), "--out", str(out), "--retry-after-cap", "0.5", *SMALL, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    paused = [line for line in done.stdout.splitlines() if "paused" in line]
    assert paused and "0.5s" in paused[0] and "86400" in paused[0], done.stdout
    assert "4 jobs: 4 succeeded, 0 failed" in done.stdout


class Output:
    """A process's output, line by line, read in a thread so the test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._stream = process.stdout
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> str:
        """The first line (not returned before) containing ``text``."""
        while (line := self.lines.get(timeout=60)) is not None:
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"the output ended without {text!r}:\n{''.join(self.seen)}")

    def rest(self) -> str:
        self._reader.join(timeout=60)
        while (line := self.lines.get(timeout=60)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


def until(condition: Callable[[], bool], process: subprocess.Popen[str]) -> bool:
    """Poll ``condition`` until it holds (True) or ``process`` exits (False)."""
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # looking again at a condition, not waiting for time to pass
    return True


def journal(out: Path) -> list[dict[str, Any]]:
    lines = (out / ".novita-journal.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_ctrl_c_twice_waits_for_unanswered_submissions_and_thrice_abandons_them(
    tmp_path: Path, pictures: Path, keyed_emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a"), job("grace", "forest", id="b")])
    out = tmp_path / "out"
    env = {**os.environ, **keyed_emulator.env, "NOVITA_API_KEY": GOOD_KEY}
    # Both submissions are parked by the emulator: sent, never answered (no task is created).
    keyed_emulator.set_faults("submit", script=[HOLD, HOLD])
    command = [sys.executable, "-m", "novita_async", "run", str(jobs), "--out", str(out),
               "--stop-grace", "600", *SMALL]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = Output(process)
        parked = lambda: keyed_emulator.set_faults("submit", script=[]) == 0  # noqa: E731
        assert until(parked, process), output.rest()  # both POSTs sent and parked
        process.send_signal(signal.SIGINT)
        output.wait_for("stopping: nothing new is submitted")
        process.send_signal(signal.SIGINT)
        waiting = output.wait_for("still awaiting")
        assert "2 submissions are still awaiting" in waiting
        assert "press Ctrl-C again to abandon them; they will be reported as unknown outcome" in (
            waiting
        )
        assert process.poll() is None  # it waits: the answers would record paid tasks
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        said = output.rest()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert "abandoning 2 submissions" in said
    assert "2 SUBMIT_OUTCOME_UNKNOWN (a task may exist and be billed" in said
    assert "--retry-unknown-submits" in said
    assert "rerun the same command to resume" in said
    assert "Traceback" not in said
    records = results(out)
    assert {name: r["error"]["reason"] for name, r in records.items()} == {
        "a": "SUBMIT_OUTCOME_UNKNOWN",
        "b": "SUBMIT_OUTCOME_UNKNOWN",
    }
    unknown = {r["id"] for r in journal(out) if "SUBMIT_OUTCOME_UNKNOWN" in json.dumps(r)}
    assert unknown == {"a", "b"}

    # A plain rerun does not pay for them again: it says what they are and what would.
    rerun = cli(*command[3:], env=env)
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert "2 SUBMIT_OUTCOME_UNKNOWN (" in rerun.stdout
    assert keyed_emulator.stats()["submissions"] == 0
