"""Distinct small input pictures for the benchmark jobs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_inputs(folder: Path, faces: int, refs: int) -> tuple[list[str], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)

    def picture(name: str, k: int, blue: int) -> str:
        path = folder / f"{name}-{k}.png"
        if not path.exists():
            Image.new("RGB", (64, 64), ((k * 37) % 256, (k * 91) % 256, blue)).save(path)
        return str(path)

    # Faces and references differ in blue, so every file is distinct by content as well as path.
    return (
        [picture("face", k, 200) for k in range(faces)],
        [picture("ref", k, 50) for k in range(refs)],
    )
