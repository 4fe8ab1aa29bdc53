"""The emulator in its own process, so its CPU is not counted as the contender's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_NEEDED = frozenset({"NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY"})


class EmulatorProcess:
    """``python -m novita_async.emulator`` on a free loopback port; a context manager.

    :meth:`start` and :meth:`wait_ready` are separate so several emulators can start at once
    (see :func:`emulators`); ``with`` does both.
    """

    def __init__(self, *args: str, log: Path | None = None) -> None:
        self.args = list(args)
        self.env: dict[str, str] = {}
        self.log = log
        """Where the emulator's stderr goes (None: discarded)."""
        self._proc: subprocess.Popen[str] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        self._log_file = open(self.log, "wb") if self.log else None  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "novita_async.emulator", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._log_file or subprocess.DEVNULL,
            text=True,
        )

    def wait_ready(self) -> None:
        """Read the ``NOVITA_*=...`` lines the emulator prints once it listens."""
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith("NOVITA_"):
                self.env[name] = value
            if self.env.keys() >= _NEEDED:
                return
        where = f"; see {self.log}" if self.log else ""
        raise RuntimeError(f"the emulator exited before it listened{where}")

    def cpu_ticks(self) -> int:
        """User + system clock ticks the emulator process has used so far (0 if unknown)."""
        if self._proc is None:
            return 0
        try:
            with open(f"/proc/{self._proc.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)

    def stats(self) -> dict[str, Any]:
        url = self.env["NOVITA_BASE_URL"] + "/__emulator/stats"
        with urllib.request.urlopen(url, timeout=30) as answer:
            data: dict[str, Any] = json.load(answer)
            return data

    def interrupt(self) -> None:
        """Ask the emulator to stop (Ctrl-C); :meth:`stop` waits for it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        if self._proc is not None:
            self.interrupt()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def emulators(args: list[str], logs: list[Path]) -> Iterator[list[EmulatorProcess]]:
    """One fresh emulator per log, all started at once (their start-ups overlap, before any
    contender runs) and all stopped together at the end. An idle emulator costs no CPU."""
    started = [EmulatorProcess(*args, log=log) for log in logs]
    try:
        for emulator in started:
            emulator.start()
        for emulator in started:
            emulator.wait_ready()
        _settle(started)
        yield started
    finally:
        for emulator in started:
            emulator.interrupt()
        for emulator in started:
            emulator.stop()


def contender_env(emulator: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, **emulator.env}


def _settle(started: list[EmulatorProcess], *, window: float = 0.5, limit: float = 20.0) -> None:
    """Wait until the emulators use no CPU over ``window`` seconds (at most ``limit``).

    An emulator listens before it has finished starting up (imports, first allocations): the
    contender that runs first would otherwise share the cores with that start-up, and its CPU
    figure would carry it (the first run of a scenario measured ~25 % more than the next ones).
    """
    deadline = time.monotonic() + limit
    before = sum(emulator.cpu_ticks() for emulator in started)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(emulator.cpu_ticks() for emulator in started)
        if now == before:
            return
        before = now
