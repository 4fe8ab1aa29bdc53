"""An emulator process for the command-line tests, and helpers to run the command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novita_async.emulator import EmulatorProcess
from novita_async.emulator._images import SAMPLE_FACES, SAMPLE_SCENES, draw_face, draw_scene
from novita_async.testing import emulator_process as kit_emulator_process


def emulator_process(*options: str) -> EmulatorProcess:
    """The testing kit's emulator process with ``--seed 1 OPTIONS``: ``with`` starts and stops
    it."""
    return kit_emulator_process("--seed", "1", *options)


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
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m novita_async ARGS`` in a subprocess (stdout is a pipe: no terminal), killed
    after ``timeout`` seconds (a guard against a hang, never a measure)."""
    return subprocess.run(
        [sys.executable, "-m", "novita_async", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
