"""The result pictures: rendered off the event loop, deterministic, cached.

``full`` mode draws a picture that shows its own wiring: thumbnails of the face and reference
images that went in (with a short hash of their bytes), the prompt, seed, model and size, over a
background drawn from the seed. ``tiny`` mode encodes a flat grey image of the requested type and
size once per (type, size), for benchmarks where the emulator must cost nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import textwrap

import anyio
import anyio.to_thread
import attrs
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .._singleflight import SingleFlight

__all__ = ["ImageStore", "RenderSpec", "content_type_of"]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_CACHE_BYTES = 256 * 1024 * 1024


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

    @classmethod
    def build(cls, *, faces: list[bytes], refs: list[bytes], **fields: object) -> RenderSpec:
        def digest(data: bytes) -> str:
            return hashlib.sha256(data).hexdigest()[:10]

        return cls(
            face=faces[0],
            ref=refs[0],
            face_digest=digest(faces[0]),
            ref_digest=digest(refs[0]),
            extra_faces=len(faces) - 1,
            extra_refs=len(refs) - 1,
            **fields,  # type: ignore[arg-type]
        )


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

    unit = max(8, min(width, height) // 32)
    font = ImageFont.load_default(size=unit)
    small = ImageFont.load_default(size=max(8, unit * 3 // 4))
    margin = unit
    panel_w = (width - 3 * margin) // 2
    panel_h = int(height * 0.55) - 2 * margin - unit
    panels = (
        ("FACE", spec.face, spec.face_digest, spec.extra_faces),
        ("REF", spec.ref, spec.ref_digest, spec.extra_refs),
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
        self._limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))

    async def get(self, spec: RenderSpec) -> bytes:
        if self._mode == "tiny":
            return await self._renders.get(
                (spec.image_type, spec.width, spec.height),
                lambda: anyio.to_thread.run_sync(
                    render_tiny, spec.image_type, spec.width, spec.height, limiter=self._limiter
                ),
            )
        return await self._renders.get(
            spec, lambda: anyio.to_thread.run_sync(render_full, spec, limiter=self._limiter)
        )
