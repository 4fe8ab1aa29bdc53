"""What the examples share: a connection (the emulator unless NOVITA_BASE_URL is set) and pictures.

Not part of the package: copy what you need.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

from novita_async import NovitaClient


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[NovitaClient]:
    """The real service when NOVITA_BASE_URL is set, else an emulator started in-process."""
    if os.environ.get("NOVITA_BASE_URL"):
        async with NovitaClient() as real:  # NOVITA_API_KEY, NOVITA_BASE_URL, NOVITA_ASSETS_URL
            yield real
        return
    from novita_async.emulator import Emulator, EmulatorConfig

    async with (
        Emulator(EmulatorConfig(task_base_seconds=0.5, seed=1)) as emu,
        NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as local,
    ):
        yield local


def sample_pictures(folder: Path) -> tuple[list[Path], list[Path]]:
    """A few flat-coloured stand-ins for face and reference photos (PNG files in ``folder``)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths: tuple[list[Path], list[Path]] = ([], [])
    colours = [(230, 190, 160), (160, 110, 80), (250, 215, 185)]
    for kind, bucket in (("face", paths[0]), ("ref", paths[1])):
        for n, colour in enumerate(colours):
            picture = Image.new("RGB", (128, 128), colour)
            ImageDraw.Draw(picture).text((8, 8), f"{kind} {n}", fill=(0, 0, 0))
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            path = folder / f"{kind}-{n}.png"
            path.write_bytes(buffer.getvalue())
            bucket.append(path)
    return paths
