"""Distinct small input pictures for the benchmark jobs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_inputs(folder: Path, faces: int, refs: int) -> tuple[list[str], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)

    def picture(name: str, k: int) -> str:
        path = folder / f"{name}-{k}.png"
        if not path.exists():
            Image.new("RGB", (64, 64), ((k * 37) % 256, (k * 91) % 256, 200)).save(path)
        return str(path)

    return [picture("face", k) for k in range(faces)], [picture("ref", k) for k in range(refs)]
