"""Sample face and reference pictures for the demo, drawn with Pillow (no files shipped).

They are cartoons, not people: enough for the emulator to show which face and which reference
went into each result.
"""

from __future__ import annotations

import io
from pathlib import Path

import attrs
from PIL import Image, ImageDraw

from .._atomic import write_atomically

__all__ = ["SAMPLE_FACES", "SAMPLE_SCENES", "Face", "Scene", "write_samples"]

_SIZE = 256


@attrs.frozen
class Face:
    name: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    eyes: tuple[int, int, int]
    backdrop: tuple[int, int, int]


@attrs.frozen
class Scene:
    name: str
    sky: tuple[int, int, int]
    ground: tuple[int, int, int]
    sun: tuple[int, int, int]
    prompt: str


SAMPLE_FACES = (
    Face("ada", (241, 194, 160), (92, 52, 28), (60, 110, 170), (210, 225, 240)),
    Face("grace", (198, 134, 92), (30, 25, 25), (70, 45, 30), (240, 220, 200)),
    Face("alan", (255, 219, 190), (200, 160, 60), (60, 140, 90), (220, 240, 220)),
    Face("edsger", (141, 85, 55), (60, 60, 60), (40, 30, 20), (235, 225, 245)),
)

SAMPLE_SCENES = (
    Scene("beach", (120, 190, 240), (235, 215, 160), (255, 230, 90), "on a sunny beach, summer"),
    Scene("forest", (170, 210, 190), (50, 110, 60), (250, 250, 210), "in a misty pine forest"),
    Scene("city", (40, 40, 80), (70, 70, 80), (250, 240, 180), "in a neon city at night"),
)


def draw_face(face: Face, size: int = _SIZE) -> bytes:
    """A cartoon head and shoulders, PNG-encoded."""
    picture = Image.new("RGB", (size, size), face.backdrop)
    draw = ImageDraw.Draw(picture)
    s = size / 256
    draw.ellipse((58 * s, 40 * s, 198 * s, 170 * s), fill=face.hair)  # hair behind the head
    draw.rectangle((70 * s, 200 * s, 186 * s, 256 * s), fill=face.hair)  # shoulders
    draw.rectangle((112 * s, 170 * s, 144 * s, 204 * s), fill=face.skin)  # neck
    draw.ellipse((72 * s, 56 * s, 184 * s, 196 * s), fill=face.skin)  # face
    for x in (100, 156):
        draw.ellipse(((x - 10) * s, 110 * s, (x + 10) * s, 126 * s), fill=(255, 255, 255))
        draw.ellipse(((x - 5) * s, 112 * s, (x + 5) * s, 124 * s), fill=face.eyes)
    mouth = (104 * s, 140 * s, 152 * s, 172 * s)
    draw.arc(mouth, 20, 160, fill=(150, 60, 60), width=max(1, int(4 * s)))
    draw.text((8 * s, 8 * s), face.name, fill=(40, 40, 40))
    return _png(picture)


def draw_scene(scene: Scene, size: int = _SIZE) -> bytes:
    """A simple landscape (sky, sun, ground), PNG-encoded."""
    picture = Image.new("RGB", (size, size), scene.sky)
    draw = ImageDraw.Draw(picture)
    horizon = int(size * 0.62)
    for y in range(horizon):  # a vertical gradient towards the horizon
        shade = tuple(min(255, c + y * 60 // horizon) for c in scene.sky)
        draw.line((0, y, size, y), fill=shade)
    draw.ellipse((size * 0.62, size * 0.12, size * 0.84, size * 0.34), fill=scene.sun)
    draw.rectangle((0, horizon, size, size), fill=scene.ground)
    draw.text((8, size - 18), scene.name, fill=(255, 255, 255))
    return _png(picture)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    write_atomically(path, [data], fsync=False)


def write_samples(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the sample faces and scenes under ``folder``; return their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = {}
    for face in SAMPLE_FACES:
        faces[face.name] = path = folder / f"face-{face.name}.png"
        _write(path, draw_face(face))
    scenes = {}
    for scene in SAMPLE_SCENES:
        scenes[scene.name] = path = folder / f"ref-{scene.name}.png"
        _write(path, draw_scene(scene))
    return faces, scenes
