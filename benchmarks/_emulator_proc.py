"""The emulator in its own process, so its CPU is not counted as the contender's.

The process itself is :class:`novita_async.emulator.EmulatorProcess`; this adds what benchmarks
need on top: many emulators started at once and left to settle before any contender runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from novita_async.emulator import EmulatorProcess

__all__ = ["EmulatorProcess", "contender_env", "cpu_ticks", "emulators"]


@contextlib.contextmanager
def emulators(
    commands: list[list[str]], logs: list[Path], *, settle: bool = True
) -> Iterator[list[EmulatorProcess]]:
    """One fresh emulator per command and log, all started at once (their start-ups overlap,
    before any contender runs) and all stopped together at the end. An idle emulator costs no
    CPU. Without ``settle`` (a quick run, whose figures mean nothing), contenders do not wait for
    the emulators' start-ups to end."""
    started = [EmulatorProcess(*args, log=log) for args, log in zip(commands, logs, strict=True)]
    try:
        for emulator in started:
            emulator.start()
        for emulator in started:
            emulator.wait_ready()
        if settle:
            _settle(started)
        yield started
    finally:
        for emulator in started:
            emulator.interrupt()
        for emulator in started:
            if emulator.pid is not None:
                emulator.stop()


def contender_env(emulator: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, **emulator.env}


def cpu_ticks(emulator: EmulatorProcess) -> int:
    """User + system clock ticks the emulator process has used so far (0 if unknown)."""
    if emulator.pid is None:
        return 0
    try:
        with open(f"/proc/{emulator.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _settle(started: list[EmulatorProcess], *, window: float = 0.5, limit: float = 20.0) -> None:
    """Wait until the emulators use no CPU over ``window`` seconds (at most ``limit``).

    An emulator listens before it has finished starting up (imports, first allocations): the
    contender that runs first would otherwise share the cores with that start-up, and its CPU
    figure would carry it (the first run of a scenario measured ~25 % more than the next ones).
    """
    deadline = time.monotonic() + limit
    before = sum(cpu_ticks(emulator) for emulator in started)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(cpu_ticks(emulator) for emulator in started)
        if now == before:
            return
        before = now
