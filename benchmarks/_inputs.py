"""Distinct small input pictures for the benchmark jobs, and inpainting masks of their size."""

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


def make_masks(folder: Path, count: int) -> list[str]:
    """``count`` distinct masks, each the size of every face and ref (64 x 64): white where to
    paint."""
    folder.mkdir(parents=True, exist_ok=True)
    masks = []
    for k in range(count):
        path = folder / f"mask-{k}.png"
        if not path.exists():
            mask = Image.new("L", (64, 64), 0)
            mask.paste(255, (k % 32, k % 32, k % 32 + 32, k % 32 + 32))
            mask.save(path)
        masks.append(str(path))
    return masks
