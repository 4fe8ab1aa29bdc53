"""The result pictures: rendered off the event loop, deterministic, cached.

``full`` mode draws a picture that shows its own wiring: thumbnails of the face and reference
images that went in (with a short hash of their bytes), the prompt, seed, model and size, over a
background drawn from the seed. ``tiny`` mode encodes a flat grey image of the requested type and
size once per (type, size), for benchmarks where the emulator must cost nothing.

The sample faces and scenes (``novita-async demo``'s inputs, and the tests') are drawn here too:
cartoons, not people, enough to show which face and which reference went into each result.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import textwrap
from pathlib import Path

import anyio
import anyio.to_thread
import attrs
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .._files import write_atomically
from .._singleflight import SingleFlight

__all__ = [
    "SAMPLE_FACES",
    "SAMPLE_SCENES",
    "Face",
    "ImageStore",
    "InputPicture",
    "RenderSpec",
    "Scene",
    "content_type_of",
    "draw_face",
    "draw_scene",
    "input_picture",
    "write_samples",
]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_CACHE_BYTES = 256 * 1024 * 1024
THUMBNAIL_SIDE = 512
"""The largest side of a v3 task's input as its task keeps it (see :func:`input_picture`)."""


def content_type_of(image_type: str) -> str:
    return f"image/{image_type}"


@attrs.frozen
class RenderSpec:
    """Everything a picture depends on: same spec, same bytes."""

    image_type: str
    width: int
    height: int
    seed: int
    index: int
    image_num: int
    prompt: str
    model_name: str
    face: bytes = attrs.field(repr=False, eq=False)
    ref: bytes = attrs.field(repr=False, eq=False)
    face_digest: str = ""
    ref_digest: str = ""
    extra_faces: int = 0
    extra_refs: int = 0
    labels: tuple[str, str] = ("FACE", "REF")
    """The captions of the two input panels (a v3 task's: its image and mask, or input)."""

    @classmethod
    def build(
        cls,
        *,
        faces: list[bytes],
        refs: list[bytes],
        digests: tuple[str, str] | None = None,
        **fields: object,
    ) -> RenderSpec:
        """``digests``: the inputs' short hashes, when ``faces`` and ``refs`` are thumbnails."""
        face_digest, ref_digest = digests or (_digest(faces[0]), _digest(refs[0]))
        return cls(
            face=faces[0],
            ref=refs[0],
            face_digest=face_digest,
            ref_digest=ref_digest,
            extra_faces=len(faces) - 1,
            extra_refs=len(refs) - 1,
            **fields,  # type: ignore[arg-type]
        )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:10]


@attrs.frozen
class InputPicture:
    """A v3 task's input image as the task keeps it for its pictures: a PNG at most
    ``THUMBNAIL_SIDE`` pixels a side (empty if the input would not decode) and the short hash of
    the input's bytes. A task keeps this, not the input: inpainting's are up to 30 MB each."""

    thumbnail: bytes = attrs.field(repr=False)
    digest: str


def input_picture(data: bytes) -> InputPicture:
    """The :class:`InputPicture` of an input image's bytes (seconds for a 16 MP one: call it
    in a worker thread)."""
    box = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    try:
        with Image.open(io.BytesIO(data)) as source:
            source.draft("RGB", box)  # JPEG: decoded at a fraction of its size
            picture = ImageOps.exif_transpose(source).convert("RGB")
    except Exception:  # drawn as "undecodable"
        return InputPicture(b"", _digest(data))
    picture.thumbnail(box)
    out = io.BytesIO()
    picture.save(out, "PNG", compress_level=1)
    return InputPicture(out.getvalue(), _digest(data))


def _encode(picture: Image.Image, image_type: str) -> bytes:
    out = io.BytesIO()
    if image_type == "png":
        picture.save(out, "PNG", compress_level=1)
    elif image_type == "jpeg":
        picture.save(out, "JPEG", quality=85)
    else:
        picture.save(out, "WEBP", quality=80, method=0)
    return out.getvalue()


def render_tiny(image_type: str, width: int, height: int) -> bytes:
    return _encode(Image.new("RGB", (width, height), (128, 128, 128)), image_type)


def _thumbnail(data: bytes, box: tuple[int, int]) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as source:
            picture = ImageOps.exif_transpose(source).convert("RGB")
    except Exception:  # any undecodable upload: draw a placeholder instead
        return None
    return ImageOps.contain(picture, (max(box[0], 1), max(box[1], 1)))


def render_full(spec: RenderSpec) -> bytes:
    width, height = spec.width, spec.height
    rng = random.Random(f"{spec.seed}:{spec.index}")
    background = (rng.randint(40, 110), rng.randint(40, 110), rng.randint(40, 110))
    picture = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(picture)
    for _ in range(12):  # seed-dependent shapes, so different seeds look different
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randint(min(width, height) // 20, min(width, height) // 5)
        colour = (rng.randint(60, 200), rng.randint(60, 200), rng.randint(60, 200))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    if min(width, height) < 128:  # too small for panels and text (a v3 task's small input)
        return _encode(picture, spec.image_type)

    unit = max(8, min(width, height) // 32)
    font = ImageFont.load_default(size=unit)
    small = ImageFont.load_default(size=max(8, unit * 3 // 4))
    margin = unit
    panel_w = (width - 3 * margin) // 2
    panel_h = int(height * 0.55) - 2 * margin - unit
    panels = (
        (spec.labels[0], spec.face, spec.face_digest, spec.extra_faces),
        (spec.labels[1], spec.ref, spec.ref_digest, spec.extra_refs),
    )
    for column, (label, data, digest, more) in enumerate(panels):
        left = margin + column * (panel_w + margin)
        top = margin + unit + unit // 2
        caption = f"{label} {digest}" + (f" (+{more})" if more else "")
        draw.text((left, margin), caption, fill="white", font=font)
        draw.rectangle(
            (left, top, left + panel_w, top + panel_h), fill=(20, 20, 20), outline="white", width=2
        )
        thumb = _thumbnail(data, (panel_w - 4, panel_h - 4))
        if thumb is None:
            draw.text((left + unit, top + unit), "undecodable", fill="white", font=font)
        else:
            x = left + 2 + (panel_w - 4 - thumb.width) // 2
            picture.paste(thumb, (x, top + 2 + (panel_h - 4 - thumb.height) // 2))

    y = int(height * 0.55) + margin // 2
    columns = max(10, int((width - 2 * margin) / (unit * 0.55)))
    lines = textwrap.wrap(spec.prompt, columns)[: max(1, (height - y) // (unit + 4) - 3)]
    footer = (
        f"seed {spec.seed}  image {spec.index + 1}/{spec.image_num}  {width}x{height}",
        spec.model_name,
    )
    block = len(lines) * (unit + 4) + len(footer) * (unit + unit // 2) + margin
    draw.rectangle((0, y - margin // 4, width, min(height, y + block)), fill=(20, 20, 20))
    for line in lines:
        draw.text((margin, y), line, fill="white", font=font)
        y += unit + 4
    for line in footer:
        y = min(y + unit // 2, height - 2 * (unit + 4))
        draw.text((margin, y), line, fill=(230, 230, 230), font=small)
        y += unit
    return _encode(picture, spec.image_type)


class ImageStore:
    """Renders pictures in worker threads, at most one render per distinct spec, LRU-cached."""

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._renders: SingleFlight[object, bytes] = SingleFlight(_CACHE_BYTES, size_of=len)
        self.cpu = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        """The emulator's CPU-bound work in worker threads (renders, large v3 bodies), one per
        core at a time: also a bound on the decoded copies of large bodies held at once."""

    async def get(self, spec: RenderSpec) -> bytes:
        if self._mode == "tiny":
            return await self._renders.get(
                (spec.image_type, spec.width, spec.height),
                lambda: anyio.to_thread.run_sync(
                    render_tiny, spec.image_type, spec.width, spec.height, limiter=self.cpu
                ),
            )
        return await self._renders.get(
            spec, lambda: anyio.to_thread.run_sync(render_full, spec, limiter=self.cpu)
        )


# --- sample pictures ---------------------------------------------------------------------------

_SAMPLE_SIZE = 256


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


def draw_face(face: Face, size: int = _SAMPLE_SIZE) -> bytes:
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


def draw_scene(scene: Scene, size: int = _SAMPLE_SIZE) -> bytes:
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


def write_samples(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the sample faces and scenes under ``folder``; return their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = {}
    for face in SAMPLE_FACES:
        faces[face.name] = path = folder / f"face-{face.name}.png"
        write_atomically(path, [draw_face(face)], fsync=False)
    scenes = {}
    for scene in SAMPLE_SCENES:
        scenes[scene.name] = path = folder / f"ref-{scene.name}.png"
        write_atomically(path, [draw_scene(scene)], fsync=False)
    return faces, scenes
