"""Fixtures for the batch runner's tests: an emulator on loopback, a client, tiny input images."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from novita_async import InstantIDRequest, NovitaClient
from novita_async.batch import Job
from novita_async.emulator import EmulatorConfig
from novita_async.testing import EmulatedNovita


def png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """``emu``'s configuration here (see tests/conftest.py)."""
    return EmulatorConfig(seed=1, task_base_seconds=0.0, image_mode="tiny")


@pytest.fixture
def client(kit: EmulatedNovita) -> NovitaClient:
    return kit.client


@pytest.fixture
def images(tmp_path: Path) -> Callable[[int], Path]:
    """``images(n)``: the path of a distinct tiny PNG number n (written once)."""
    folder = tmp_path / "inputs"
    folder.mkdir()

    def make(n: int) -> Path:
        path = folder / f"img{n}.png"
        if not path.exists():
            path.write_bytes(png_bytes(n))
        return path

    return make


def make_job(
    job_id: str, face: Path | bytes, ref: Path | bytes, prompt: str = "", **fields: object
) -> Job:
    # Each job's prompt differs, so the emulator's duplicate count means "the same job twice".
    request = InstantIDRequest(
        prompt=f"portrait of {job_id} {prompt}".strip(), width=128, height=128, **fields
    )  # type: ignore[arg-type]
    return Job(id=job_id, face_images=[face], ref_images=[ref], request=request)
