"""Crash and resume: the CLI in a subprocess, killed at seeded moments, rerun until it ends.

The emulator runs in its own process, so kills cannot touch it and its counters see every run.
Moments are chosen by watching the journal grow (after ``d`` more records, ``d`` drawn from a
seeded generator), never by sleeping.

A SIGKILL is *frozen* first: the emulator is told (over its HTTP controls) to hold the next
requests to one route (``result`` or ``image``, drawn too) and the kill waits until every job in
flight is parked there. Then no submission can be in flight (every slot is taken by a parked job,
or every job is submitted), so the kill never lands in the one documented window where a crash
can submit a job twice (after the POST, before its answer is journaled), and "each job submitted
exactly once" is a fair assertion. After every kill the test checks that each task the emulator
created is in the journal. SIGINT needs no freezing: a graceful stop shields submissions in flight.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from PIL import Image

from .checks import API_KEY, JOURNAL_NAME

# The batch runner's default ``poll_concurrency`` (the CLI has no flag for it): with more jobs in
# flight than this, some wait for a poll slot instead of being parked, and a run cannot be frozen
# on the result route.
POLL_SLOTS = 16
HOLD_SECONDS = 600  # parked requests outlive any run; the emulator's shutdown ends them
WATCH_INTERVAL = 0.002  # how often the journal and the counters are looked at


class EmulatorProcess:
    """``python -m novita_async.emulator`` in a subprocess, steered over its HTTP controls."""

    def __init__(self, *options: str) -> None:
        command = [
            sys.executable,
            "-m",
            "novita_async.emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            *options,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.env: dict[str, str] = {}
        assert self.process.stdout is not None
        while "NOVITA_API_KEY" not in self.env:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the emulator exited before listening")
            name, _, value = line.strip().partition("=")
            self.env[name] = value
        self.base_url = self.env["NOVITA_BASE_URL"]

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call("GET", "/__emulator/stats")
        return stats

    def hold(self, route: str, count: int) -> None:
        script = {"script": [f"delay:{HOLD_SECONDS}"] * count}
        self._call("POST", f"/__emulator/faults/{route}", script)

    def clear_faults(self) -> None:
        self._call("DELETE", "/__emulator/faults")

    def close(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()


def write_job_file(folder: Path, jobs: int) -> Path:
    """``jobs.jsonl`` with ``jobs`` lines over three faces and three scenes (paths relative)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(3):
        Image.new("RGB", (16, 16), (60 * n, 120, 200)).save(folder / f"face{n}.png")
        Image.new("RGB", (16, 16), (200, 60 * n, 90)).save(folder / f"scene{n}.png")
    path = folder / "jobs.jsonl"
    with path.open("w") as lines:
        for n in range(jobs):
            job = {
                "id": f"job{n:04d}",
                "face_images": [f"face{n % 3}.png"],
                "ref_images": [f"scene{n % 3}.png"],
                "prompt": f"crash job {n}",
                "width": 128,
                "height": 128,
            }
            lines.write(json.dumps(job) + "\n")
    return path


def journal_records(out: Path) -> list[dict[str, Any]]:
    """Complete records only: a line torn by a kill is not one yet."""
    try:
        raw = (out / JOURNAL_NAME).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.splitlines(keepends=True):
        if line.endswith(b"\n"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def in_flight(records: list[dict[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    """(job ids in flight, job ids ever submitted, task ids ever submitted) per the journal."""
    submitted = {r["id"] for r in records if r.get("type") == "submitted"}
    tasks = {r["task_id"] for r in records if r.get("type") == "submitted"}
    ended = set()
    for record in records:
        if record.get("type") in ("succeeded", "failed"):
            ended.add(record["id"])
        elif record.get("type") == "submitted":
            ended.discard(record["id"])
    return submitted - ended, submitted, tasks


def watch(process: subprocess.Popen[bytes], condition: Callable[[], bool], limit: float) -> bool:
    """Poll ``condition`` until it holds (True) or the process exits (False)."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("the run neither reached the kill point nor ended")
        time.sleep(WATCH_INTERVAL)  # a file has no change notification in the stdlib: look again
    return True


@attrs.define
class CrashRun:
    """Drives the CLI over one job file and output folder, run after run."""

    emulator: EmulatorProcess
    jobs_file: Path
    out: Path
    logs: Path
    jobs: int
    concurrency: int
    runs: int = 0
    kills: list[dict[str, Any]] = attrs.field(factory=list)
    exit_codes: list[int] = attrs.field(factory=list)
    unjournaled: int = 0
    """Tasks the emulator created that the journal does not know (kills in the window)."""

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "novita_async",
            "run",
            str(self.jobs_file),
            "--out",
            str(self.out),
            "--no-progress",
            "--debug",
            "--concurrency",
            str(self.concurrency),
        ]
        env = {**os.environ, **self.emulator.env}
        with (
            (self.logs / f"run{self.runs}.out").open("wb") as stdout,
            (self.logs / f"run{self.runs}.err").open("wb") as stderr,
        ):
            return subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)

    def finish(self, process: subprocess.Popen[bytes], timeout: float = 120) -> int:
        code = process.wait(timeout=timeout)
        self.exit_codes.append(code)
        return code

    def _grown(self, base: int, more: int) -> Callable[[], bool]:
        return lambda: len(journal_records(self.out)) >= base + more

    def _frozen(self, route: str, baseline: int) -> Callable[[], bool]:
        def frozen() -> bool:
            flying, submitted, _ = in_flight(journal_records(self.out))
            stats = self.emulator.stats()["in_flight"]
            held = stats.get(route, 0) - baseline
            full = len(flying) == self.concurrency or len(submitted) == self.jobs
            # No POST may be on its way either: a kill then would land in the documented window.
            posting = stats.get("submit", 0)
            return bool(flying) and held == len(flying) and full and posting == 0

        return frozen

    def kill_at(self, more: int, route: str | None) -> bool:
        """Start a run; after ``more`` journal records freeze it on ``route`` and SIGKILL it.

        ``route=None`` kills at once, unfrozen: the kill may then land in the documented window,
        and the tasks unknown to the journal are counted (``unjournaled_tasks``, cumulative).
        Returns False if the run ended first."""
        if route == "result" and self.concurrency > POLL_SLOTS:
            raise ValueError(f"parking on result needs concurrency <= {POLL_SLOTS}")
        base = len(journal_records(self.out))
        process = self.start()
        try:
            if not watch(process, self._grown(base, more), 120):
                return False
            if route is not None:
                baseline = self.emulator.stats()["in_flight"].get(route, 0)
                self.emulator.hold(route, self.concurrency)
                if not watch(process, self._frozen(route, baseline), 120):
                    return False
            process.send_signal(signal.SIGKILL)
        finally:
            self.finish(process)
            self.emulator.clear_faults()
        # A POST the dead process sent may still be in the emulator's hands: let it land.
        stats = self.emulator.stats()
        while stats["in_flight"].get("submit", 0):
            time.sleep(WATCH_INTERVAL)
            stats = self.emulator.stats()
        records = journal_records(self.out)
        flying, submitted, tasks = in_flight(records)
        previous, self.unjournaled = self.unjournaled, stats["submissions"] - len(tasks)
        self.kills.append(
            {
                "signal": "SIGKILL",
                "after_records": len(records) - base,
                "parked_on": route or "(none)",
                "jobs_in_flight": len(flying),
                "jobs_submitted": len(submitted),
                "tasks_created": stats["submissions"],
                "tasks_in_journal": len(tasks),
                "unjournaled_tasks": self.unjournaled,
                "new_unjournaled_tasks": self.unjournaled - previous,
            }
        )
        return True

    def interrupt_at(self, more: int) -> int | None:
        """Start a run and SIGINT it after ``more`` journal records; its exit code (None if it
        ended first)."""
        base = len(journal_records(self.out))
        process = self.start()
        try:
            if not watch(process, self._grown(base, more), 120):
                return None
            process.send_signal(signal.SIGINT)
        finally:
            code = self.finish(process)
        grown = len(journal_records(self.out)) - base
        self.kills.append({"signal": "SIGINT", "after_records": grown, "exit": code})
        return code

    def run_to_end(self) -> int:
        return self.finish(self.start())


def kill_points(seed: int, count: int, span: int) -> Iterator[tuple[int, str]]:
    """``count`` seeded (records to wait for, route to park on) pairs."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randint(1, span), rng.choice(("result", "image"))
