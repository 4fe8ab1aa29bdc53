"""The emulator in its own process, so its CPU is not counted as the contender's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from typing import Any


class EmulatorProcess:
    """``python -m novita_async.emulator`` on a free loopback port; a context manager."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "novita_async.emulator", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith("NOVITA_"):
                self.env[name] = value
            if {"NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY"} <= self.env.keys():
                break
        else:
            raise RuntimeError("the emulator exited before it listened")
        return self

    def stats(self) -> dict[str, Any]:
        url = self.env["NOVITA_BASE_URL"] + "/__emulator/stats"
        with urllib.request.urlopen(url, timeout=30) as answer:
            data: dict[str, Any] = json.load(answer)
            return data

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()


def contender_env(emulator: EmulatorProcess) -> dict[str, str]:
    return {**os.environ, **emulator.env}
