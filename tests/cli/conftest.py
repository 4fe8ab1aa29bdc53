"""An emulator process for the command-line tests, and helpers to run the command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novita_async._cli._samples import SAMPLE_FACES, SAMPLE_SCENES, draw_face, draw_scene


class EmulatorProcess:
    """``novita-async emulator`` in a subprocess; ``env`` points a client at it."""

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "novita_async", "emulator", "--seed", "1", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.env: dict[str, str] = {}
        assert self.process.stdout is not None
        while len(self.env) < 3:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the emulator exited before listening")
            name, _, value = line.strip().partition("=")
            if name in ("NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY"):
                self.env[name] = value

    def stats(self) -> dict[str, Any]:
        url = self.env["NOVITA_BASE_URL"] + "/__emulator/stats"
        with urllib.request.urlopen(url, timeout=10) as answer:
            stats: dict[str, Any] = json.load(answer)
        return stats

    def requests(self, route: str) -> int:
        return sum(self.stats()["requests"].get(route, {}).values())

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            assert self.process.wait(timeout=10) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()


@contextlib.contextmanager
def emulator_process(*options: str) -> Iterator[EmulatorProcess]:
    emulator = EmulatorProcess(*options)
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    with emulator_process("--task-seconds", "0.05", "--image-mode", "tiny") as running:
        yield running


@pytest.fixture
def emulator_env(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    return emulator.env


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """Two sample faces and two scenes as PNG files in ``tmp_path/pictures``."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for face in SAMPLE_FACES[:2]:
        (folder / f"{face.name}.png").write_bytes(draw_face(face, 64))
    for scene in SAMPLE_SCENES[:2]:
        (folder / f"{scene.name}.png").write_bytes(draw_scene(scene, 64))
    return folder


def cli(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m novita_async ARGS`` in a subprocess (stdout is a pipe: no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "novita_async", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )
