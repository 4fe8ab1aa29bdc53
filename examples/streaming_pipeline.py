"""A streaming pipeline: prompts from an async generator, each image post-processed as it lands.

The batch runner reads jobs lazily from any async iterable, so the producer can be a queue, a
database cursor or a web socket; outcomes stream back in completion order while the run goes on.
Here each finished image is turned into a grey thumbnail in a worker thread (Pillow work must not
block the event loop).

    python examples/streaming_pipeline.py [OUT]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from _support import client, sample_pictures
from PIL import Image, ImageOps

from novita_async import BatchRunner, InstantIDRequest, Job
from novita_async.batch import BatchOptions

PROMPTS = ["astronaut", "knight in armour", "jazz singer", "chef", "mountaineer", "painter"]


async def prompts() -> AsyncIterator[str]:
    """Stands in for any async source: a queue, a database cursor, a message stream."""
    for prompt in PROMPTS:
        await asyncio.sleep(0)  # an await per item, as a real source would have
        yield f"portrait of a {prompt}"


async def jobs(faces: list[Path], refs: list[Path]) -> AsyncIterator[Job]:
    n = 0
    async for prompt in prompts():
        yield Job(
            id=f"p{n}",
            face_images=[faces[n % len(faces)]],
            ref_images=[refs[n % len(refs)]],
            request=InstantIDRequest(prompt=prompt, width=512, height=512),
        )
        n += 1


def thumbnail(source: Path) -> Path:
    target = source.with_name(source.stem + "-thumb.png")
    with Image.open(source) as image:
        small = ImageOps.grayscale(image)
        small.thumbnail((128, 128))
        small.save(target)
    return target


async def main(out: Path) -> None:
    faces, refs = sample_pictures(out / "inputs")
    async with client() as novita:
        runner = BatchRunner(novita, out, BatchOptions(concurrency=4))
        async with runner.run(jobs(faces, refs)) as outcomes:
            async for outcome in outcomes:
                if not outcome.ok:
                    print(f"{outcome.job_id} failed: {outcome.error}")
                    continue
                for name in outcome.files:
                    thumb = await anyio.to_thread.run_sync(thumbnail, out / name)
                    print(f"{outcome.job_id}: {name} -> {thumb.relative_to(out)}")
    print(f"{runner.summary.succeeded}/{len(PROMPTS)} images post-processed")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as scratch:
            asyncio.run(main(Path(scratch)))
