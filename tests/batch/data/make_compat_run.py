"""Writes ``compat/``: a run folder made before issue 22's redesign (``test_compat.py``).

Run it again only if the on-disk format changes on purpose:
``python -m tests.batch.data.make_compat_run``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio

from novita_async import InstantIDRequest
from novita_async.batch import BatchRunner, Job
from novita_async.emulator import EmulatorConfig
from novita_async.testing import emulated

from ..conftest import png_bytes

HERE = Path(__file__).parent / "compat"


def compat_jobs(inputs: Path) -> list[Job]:
    """Three jobs that succeed (one with two images) and one whose task fails."""

    def job(job_id: str, prompt: str, image_num: int = 1) -> Job:
        request = InstantIDRequest(prompt=prompt, width=128, height=128, image_num=image_num)
        faces, refs = [inputs / "face.png"], [inputs / "ref.png"]
        return Job(id=job_id, face_images=faces, ref_images=refs, request=request)

    return [
        job("a", "portrait of a"),
        job("b", "portrait of b", image_num=2),
        job("c", "portrait of c"),
        job("d", "portrait of d [[fail]]"),
    ]


async def main() -> None:
    out, inputs = HERE / "out", HERE / "inputs"
    shutil.rmtree(HERE, ignore_errors=True)
    inputs.mkdir(parents=True)
    (inputs / "face.png").write_bytes(png_bytes(1))
    (inputs / "ref.png").write_bytes(png_bytes(2))
    config = EmulatorConfig(seed=1, task_base_seconds=0.0, image_mode="tiny")
    async with emulated(config) as kit:
        print(await BatchRunner(kit.client, out).run_all(compat_jobs(inputs)))
    for made_by_each_run in (".novita-journal.jsonl.reserve", ".novita-lock"):
        (out / made_by_each_run).unlink()


if __name__ == "__main__":
    anyio.run(main)
