"""The mixed-task scenario's jobs, in one place for every contender and for the harness's check.

Every ten jobs: four txt2img, three img2img, one inpainting, one upscale and one InstantID,
interleaved, each task with its own output size (every twentieth job, a txt2img one, makes two
images), so that a wrong size or a job sent to the wrong endpoint shows. A contender turns each
:class:`MixedJob` into its own calls and saves image ``n`` of job ``id`` as ``{id}_{n}.<type>``
(this package's own naming) in the spec's ``out_dir``; the harness then opens every expected file
(:func:`check_outputs`, outside the contender's process, so its CPU is not the contender's) and
compares what each endpoint received with :func:`expected_routes`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from PIL import Image

from benchmarks._spec import RunSpec

CYCLE = (
    "txt2img", "img2img", "txt2img", "inpainting", "txt2img",
    "img2img", "upscale", "txt2img", "img2img", "instant-id",
)  # fmt: skip
INPUT_SIDE = 64
"""Every input picture is this square (``benchmarks._inputs``): inpainting keeps it, upscale
doubles it."""
SIZES = {
    "txt2img": (128, 192),
    "img2img": (192, 128),
    "inpainting": (INPUT_SIDE, INPUT_SIDE),
    "upscale": (2 * INPUT_SIDE, 2 * INPUT_SIDE),
    "instant-id": (128, 128),
}
"""The output size (width, height) of each task's images."""
ROUTE = {"instant-id": "submit"}
"""The emulator's name of a task's submission route, where it is not the task's name."""
MODELS = {
    "txt2img": "sd_xl_base_1.0.safetensors",
    "img2img": "sd_xl_base_1.0.safetensors",
    "inpainting": "realisticVisionV51_v51VAE-inpainting.safetensors",
    "upscale": "RealESRNet_x4plus",
    "instant-id": "sdxlUnstableDiffusers_v8HEAVENSWRATH_133813.safetensors",
}
IMAGE_TYPE = "jpeg"
STEPS, GUIDANCE = 20, 7.5
SAMPLERS = {"instant-id": "Euler"}
"""Each task's sampler where not ``Euler a`` (the v3 tasks' usual one)."""


@attrs.frozen
class MixedJob:
    id: str
    index: int
    task: str
    prompt: str
    image_num: int
    width: int
    height: int
    image: str | None = None
    """The input image of img2img, inpainting and upscale; InstantID's face."""
    mask: str | None = None
    ref: str | None = None
    """InstantID's reference picture."""

    @property
    def model(self) -> str:
        return MODELS[self.task]

    @property
    def sampler(self) -> str:
        return SAMPLERS.get(self.task, "Euler a")


def mixed_jobs(spec: RunSpec) -> Iterator[MixedJob]:
    """The spec's ``jobs`` mixed jobs, the same for every contender; lazily."""
    for index, face, ref in spec.job_inputs():
        task = CYCLE[index % len(CYCLE)]
        width, height = SIZES[task]
        yield MixedJob(
            id=str(index),
            index=index,
            task=task,
            prompt=f"benchmark job {index}",
            image_num=2 if task == "txt2img" and index % 20 == 0 else 1,
            width=width,
            height=height,
            image=None
            if task == "txt2img"
            else _upscaled(spec, index)
            if task == "upscale"
            else face,
            mask=spec.masks[index % len(spec.masks)] if task == "inpainting" else None,
            ref=ref if task == "instant-id" else None,
        )


def _upscaled(spec: RunSpec, index: int) -> str:
    """An upscale job's picture: upscale has no prompt or seed, so two jobs of one picture would
    be one body sent twice (a duplicate submission); each of the first ``len(CYCLE) * faces``
    jobs' upscale has its own."""
    return spec.faces[index // len(CYCLE) % len(spec.faces)]


def expected_routes(spec: RunSpec) -> dict[str, int]:
    """Submissions each emulator route should receive: each job once."""
    return dict(Counter(ROUTE.get(job.task, job.task) for job in mixed_jobs(spec)))


def check_outputs(spec: RunSpec, server: dict[str, Any] | None) -> dict[str, float]:
    """The run's correctness, as figures: images expected, on disk at the right size, missing or
    of a wrong size; submissions per route off from one per job, and unknown fields sent."""
    out = Path(spec.out_dir)
    expected = right = 0
    for job in mixed_jobs(spec):
        for n in range(job.image_num):
            expected += 1
            found = sorted(out.glob(f"{job.id}_{n}.*"))
            if len(found) == 1 and _size(found[0]) == (job.width, job.height):
                right += 1
    figures = {"images_expected": expected, "images_right": right, "images_wrong": expected - right}
    if server is not None:
        routes, wanted = server.get("submissions_by_route", {}), expected_routes(spec)
        figures["routes_off"] = sum(
            abs(routes.get(route, 0) - wanted.get(route, 0)) for route in {*routes, *wanted}
        )
        figures["unknown_fields"] = sum(
            n for fields in server.get("unknown_fields", {}).values() for n in fields.values()
        )
    return {name: float(value) for name, value in figures.items()}


def _size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as picture:
            return picture.size
    except OSError:
        return None
