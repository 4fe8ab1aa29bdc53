"""Crash and resume: the CLI in a subprocess, killed at seeded moments, rerun until it ends.

The emulator runs in its own process, so kills cannot touch it and its counters see every run.
Moments are chosen by watching the journal grow (after ``d`` more records, ``d`` drawn from a
seeded generator), never by sleeping.

A SIGKILL is *frozen* first, so that it never lands in the one documented window where a crash can
submit a job twice (after a POST is sent, before its answer is journaled) and "each job submitted
exactly once" is a fair assertion. The emulator is told (over its HTTP controls) to park the next
requests to ``submit`` and to one other route (``result`` or ``image``, drawn too): a parked request
is never answered, so a parked POST creates no task. The kill waits until every job that can send a
request is parked (:meth:`CrashRun._frozen` says why that is enough). Parked requests are counted by
the scripted outcomes they used up, not by the emulator's in-flight gauge: that gauge also holds
requests of earlier runs and ones being answered, and it cannot see a request the emulator has not
read yet. After every kill the test checks that each task the emulator created is in the journal.
SIGINT needs no freezing: a graceful stop shields submissions in flight.

An *unfrozen* SIGKILL (``route=None``) parks nothing: POSTs are genuinely in flight when it lands.
It can also wait for the worst moments (``wait_for``): a POST sent (``"post"``: an intent with no
answer in the journal), or a task created whose answer has not reached the journal yet
(``"answer"``: the emulator holds more tasks than the journal). The journal's intent, written
before each POST, makes the
rerun report such a job ``SUBMIT_OUTCOME_UNKNOWN`` instead of paying for it again; the harness
keeps the jobs each kill left with an intent and no answer (:attr:`CrashRun.unknown_jobs`) and the
tasks the emulator created that the journal does not know (:attr:`CrashRun.unjournaled`), so that
a test can check that a plain rerun reports exactly those jobs and submits none of them again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from PIL import Image
from support import reap

from novita_async.emulator import EmulatorProcess as SharedEmulatorProcess

from .checks import API_KEY, JOURNAL_NAME

# The batch runner's default ``submit_concurrency`` (the CLI has no flag for it): SUBMIT_SLOTS
# POSTs parked hold every permit to send one.
SUBMIT_SLOTS = 8
# A parked request sleeps this long before the emulator runs it: longer than any run, so a parked
# POST never creates a task; the emulator's shutdown cancels them all.
HOLD_SECONDS = 86_400
# The client abandons a request after 60 s of silence (``Timeouts.sock_read``) while the emulator
# keeps it parked: past that, parked requests no longer stand for parked jobs. A freeze takes well
# under a second; this bound turns a freeze that cannot happen into an error, not a late kill.
FREEZE_LIMIT = 30.0
WATCH_INTERVAL = 0.002  # how often the journal and the counters are looked at


class EmulatorProcess(SharedEmulatorProcess):
    """The shared emulator process, started at once and accepting only the tests' key."""

    def __init__(self, *options: str) -> None:
        super().__init__("--api-key", API_KEY, *options)
        self.start()
        self.wait_ready()

    def hold(self, route: str, count: int) -> int:
        """Park the next ``count`` requests to ``route``; how many outcomes are queued now."""
        return self.set_faults(route, script=[f"delay:{HOLD_SECONDS}"] * count)

    def queued(self, route: str) -> int:
        """Scripted outcomes still queued for ``route`` (an empty script adds none)."""
        return self.set_faults(route, script=[])

    def close(self) -> int:
        return self.stop()


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


_JOB_RECORDS = frozenset({"submitting", "not_submitted", "submitted", "succeeded", "failed"})


def phases(records: list[dict[str, Any]]) -> dict[str, str]:
    """Each job's last phase per the journal: the type of its last record."""
    return {r["id"]: r["type"] for r in records if r.get("type") in _JOB_RECORDS}


def ended_jobs(records: list[dict[str, Any]]) -> set[str]:
    """Job ids whose last record ends them (``succeeded`` or ``failed``)."""
    return {job for job, phase in phases(records).items() if phase in ("succeeded", "failed")}


def unanswered(records: list[dict[str, Any]]) -> set[str]:
    """Job ids whose last record is an intent: a POST sent (or about to be), its answer unknown."""
    return {job for job, phase in phases(records).items() if phase == "submitting"}


def in_flight(records: list[dict[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    """(job ids in flight, job ids ever submitted, task ids ever submitted) per the journal."""
    submitted = {r["id"] for r in records if r.get("type") == "submitted"}
    tasks = {r["task_id"] for r in records if r.get("type") == "submitted"}
    return submitted - ended_jobs(records), submitted, tasks


def unread_bytes(port: int) -> int:
    """Bytes (and, on the listening socket, connections) the kernel holds for local TCP ``port``
    that the server has not taken yet, per Linux's ``/proc/net/tcp`` (0 where it does not exist)."""
    unread = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                unread += int(fields[4].split(":")[1], 16)
    return unread


def watch(
    process: subprocess.Popen[bytes],
    condition: Callable[[], bool],
    limit: float,
    what: str = "the kill point",
) -> bool:
    """Poll ``condition`` until it holds (True) or the process exits (False)."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run neither reached {what} nor ended in {limit:.0f}s")
        time.sleep(WATCH_INTERVAL)  # a file has no change notification in the stdlib: look again
    return True


@attrs.define
class Freeze:
    """Requests to ``routes`` parked since :meth:`start`."""

    emulator: EmulatorProcess
    routes: tuple[str, ...]
    queued: dict[str, int] = attrs.field(factory=dict)

    def start(self, slots: int) -> None:
        # Enough: a parked request keeps its job's slot, so at most ``slots`` park.
        for route in self.routes:
            self.queued[route] = self.emulator.hold(route, slots)

    def parked(self) -> dict[str, int]:
        """Requests parked per route: each one used up one scripted outcome."""
        return {
            route: queued - self.emulator.queued(route) for route, queued in self.queued.items()
        }


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
    unknown_jobs: set[str] = attrs.field(factory=set)
    """Jobs a kill left with an intent and no answer: each is ``SUBMIT_OUTCOME_UNKNOWN`` now."""
    parked_posts: int = 0
    """POSTs of killed runs parked in the emulator for good (they never create a task)."""

    def start(
        self, *options: str, env: dict[str, str] | None = None, debug: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start the CLI over the job file (``env`` added to the emulator's variables); with
        ``debug``, its DEBUG log on stderr."""
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
            *(["--debug"] if debug else []),
            "--concurrency",
            str(self.concurrency),
            *options,
        ]
        env = {**os.environ, **self.emulator.env, **(env or {})}
        with (
            (self.logs / f"run{self.runs}.out").open("wb") as stdout,
            (self.logs / f"run{self.runs}.err").open("wb") as stderr,
        ):
            return subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)

    def finish(self, process: subprocess.Popen[bytes], timeout: float = 120) -> int:
        code = process.wait(timeout=timeout)
        self.exit_codes.append(code)
        return code

    def said(self, run: int | None = None) -> tuple[str, str]:
        """(stdout, stderr) of run number ``run`` (default: the last one)."""
        number = run or self.runs
        out, err = (
            (self.logs / f"run{number}.{kind}").read_text(encoding="utf-8", errors="replace")
            for kind in ("out", "err")
        )
        return out, err

    def _grown(self, base: int, more: int) -> Callable[[], bool]:
        return lambda: len(journal_records(self.out)) >= base + more

    def _frozen(self, freeze: Freeze) -> Callable[[], bool]:
        """True once no POST can be on its way: a kill then cannot leave a task unjournaled.

        From :meth:`Freeze.start` on, every POST the emulator reads is parked (the script holds
        ``concurrency`` of them, and a parked POST keeps its job's slot), so it creates no task.
        A POST that can still create one was sent before: its intent is in the journal, and it
        stays an intent until its answer is journaled. Parked POSTs are read first and the journal
        second (parked ones stay parked, intents only get answered): once the intents of this run
        number the POSTs parked, each intent is a parked POST, and no POST is between its task and
        its journaled answer. The ``result``/``image`` requests parked as well only vary the moment.

        This does not ask every job to be parked: a job can hold its slot without sending
        anything for as long as another's request is parked (its poll waits for the first polls
        of its kind, see ``batch._poller``), and waiting for it to be parked never ends.
        """

        def frozen() -> bool:
            parked = freeze.parked()["submit"]
            return len(unanswered(journal_records(self.out)) - self.unknown_jobs) == parked

        return frozen

    def _settle(self) -> dict[str, Any]:
        """Once a killed run's last requests are read and answered, the emulator's counters."""
        port = int(self.emulator.base_url.rsplit(":", 1)[1])
        # A request the dead process sent may still sit in the emulator's socket: let it land.
        while unread_bytes(port):
            time.sleep(WATCH_INTERVAL)
        stats = self.emulator.stats()
        while stats["in_flight"].get("submit", 0) > self.parked_posts:
            time.sleep(WATCH_INTERVAL)
            stats = self.emulator.stats()
        return stats

    def _posting(self) -> bool:
        """A POST of this run is in flight: an intent that no earlier kill left."""
        return bool(unanswered(journal_records(self.out)) - self.unknown_jobs)

    def _answering(self) -> bool:
        """A task of this run exists that the journal does not know: its answer is on its way."""
        tasks = in_flight(journal_records(self.out))[2]
        created: int = self.emulator.stats()["submissions"]
        return created - len(tasks) > self.unjournaled

    def kill_at(self, more: int, route: str | None, *, wait_for: str | None = None) -> bool:
        """Start a run; after ``more`` journal records freeze it on ``route`` and SIGKILL it.

        ``route=None`` kills unfrozen, at once or (``wait_for``) once a POST is in flight
        (``"post"``) or a task's answer is (``"answer"``): the kill may then cut POSTs off, whose
        jobs are added to :attr:`unknown_jobs`, and the tasks unknown to the journal are counted
        (``unjournaled_tasks``, cumulative). Returns False if the run ended first."""
        if wait_for is not None and route is not None:
            raise ValueError("a frozen kill waits for its freeze")
        base = len(journal_records(self.out))
        freeze = None if route is None else Freeze(self.emulator, ("submit", route))
        grown = self._grown(base, more)
        worst = {None: lambda: True, "post": self._posting, "answer": self._answering}[wait_for]
        parked: dict[str, int] = {}
        process = self.start()
        try:
            if not watch(process, lambda: grown() and worst(), 120):
                return False
            if freeze is not None:
                freeze.start(self.concurrency)
                if not watch(process, self._frozen(freeze), FREEZE_LIMIT, "a freeze"):
                    return False
            process.send_signal(signal.SIGKILL)
        finally:
            # On every path, a failed wait included: a run left alive outlives the test.
            reap(process)
            self.finish(process)
            if freeze is not None:
                if freeze.queued:
                    parked = freeze.parked()
                    self.parked_posts += parked["submit"]
                self.emulator.clear_faults()
        stats = self._settle()
        records = journal_records(self.out)
        flying, submitted, tasks = in_flight(records)
        cut = unanswered(records) - self.unknown_jobs
        self.unknown_jobs |= cut
        previous, self.unjournaled = self.unjournaled, stats["submissions"] - len(tasks)
        self.kills.append(
            {
                "signal": "SIGKILL",
                "after_records": len(records) - base,
                "parked_on": route or "(none)",
                "waited_for": wait_for or "(nothing)",
                "parked": parked,
                "jobs_in_flight": len(flying),
                "jobs_submitted": len(submitted),
                "posts_cut": len(cut),
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
            code = self.finish(process)
        finally:
            reap(process)
        grown = len(journal_records(self.out)) - base
        self.kills.append({"signal": "SIGINT", "after_records": grown, "exit": code})
        return code

    def run_to_end(self, *options: str) -> int:
        process = self.start(*options)
        try:
            return self.finish(process)
        finally:
            reap(process)


def kill_points(seed: int, count: int, span: int) -> Iterator[tuple[int, str]]:
    """``count`` seeded (records to wait for, route to park on) pairs."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randint(1, span), rng.choice(("result", "image"))
