"""A batch mixing every task (InstantID, txt2img, img2img, inpainting, upscale) from a JSONL file.

Each line's "task" picks its request (a line without one is InstantID); the other keys are that
task's fields by their API names, and input images are paths relative to the file: InstantID's
"face_images" and "ref_images" (uploaded once each), the other tasks' "image" and "mask_image"
(sent inline with the submission). Rerunning with the same output folder resumes: finished jobs
are skipped, submitted ones followed, nothing is paid twice.

    python examples/mixed_tasks.py [JOBS.jsonl] [OUT]   # without arguments: makes a sample file
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _support import client, sample_pictures
from PIL import Image

from novita_async import BatchRunner
from novita_async.batch import BatchOptions, read_jobs

CHECKPOINT = "sd_xl_base_1.0.safetensors"
INPAINTING_CHECKPOINT = "realisticVisionV51_v51VAE-inpainting.safetensors"


def write_sample_jobs(folder: Path) -> Path:
    """Three jobs of each task over the sample pictures (128 x 128) and one mask."""
    faces, refs = sample_pictures(folder / "pictures")
    # Inpainting repaints where the mask is white (here the lower half); it has the image's size.
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 64, 128, 128))
    mask.save(folder / "pictures" / "mask.png")
    lines = []
    for n, (face, ref) in enumerate(zip(faces, refs, strict=True)):
        face_path, ref_path = f"pictures/{face.name}", f"pictures/{ref.name}"
        lines += [
            {"id": f"portrait-{n}", "face_images": [face_path], "ref_images": [ref_path],
             "prompt": f"portrait number {n}", "width": 512, "height": 512},
            {"id": f"harbour-{n}", "task": "txt2img", "model_name": CHECKPOINT,
             "prompt": f"a harbour at dawn, number {n}", "width": 512, "height": 384},
            {"id": f"watercolour-{n}", "task": "img2img", "model_name": CHECKPOINT,
             "prompt": f"a watercolour, number {n}", "width": 512, "height": 512,
             "strength": 0.6, "image": ref_path},
            {"id": f"flowers-{n}", "task": "inpainting", "model_name": INPAINTING_CHECKPOINT,
             "prompt": f"a field of flowers, number {n}", "image": ref_path,
             "mask_image": "pictures/mask.png"},
            {"id": f"larger-{n}", "task": "upscale", "model_name": "RealESRNet_x4plus",
             "scale_factor": 2 + n, "image": ref_path},
        ]  # fmt: skip
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def count_tasks(jobs_path: Path) -> None:
    """Say how many jobs of each task the file holds (no "task": InstantID)."""
    with jobs_path.open(encoding="utf-8") as lines:
        jobs = [json.loads(line) for line in lines if line.strip()]
    tasks = Counter(job.get("task", "instant-id") for job in jobs)
    print("jobs by task:", ", ".join(f"{task} {count}" for task, count in sorted(tasks.items())))


async def main(jobs_path: Path, out: Path) -> int:
    async with client() as novita:
        print(f"balance: ${await novita.balance():.2f}")
        runner = BatchRunner(novita, out, BatchOptions(concurrency=20, rate=10.0))
        # read_jobs reads the file lazily; a line it cannot use comes as an InvalidJob, which the
        # runner records failed (naming its line and field) while the other jobs go on.
        async with runner.run(read_jobs(jobs_path)) as outcomes:
            async for outcome in outcomes:  # in the order jobs end
                detail = ", ".join(outcome.files) if outcome.ok else outcome.error
                print(f"{outcome.job_id}: {outcome.status} {detail}")
    summary = runner.summary
    print(f"{summary.succeeded} succeeded, {summary.failed} failed in {summary.wall_seconds:.1f}s")
    print(f"results: {out / 'results.jsonl'}")
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) == 3:
        count_tasks(Path(sys.argv[1]))
        sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]))))
    with tempfile.TemporaryDirectory() as scratch:
        sample = write_sample_jobs(Path(scratch))
        count_tasks(sample)
        sys.exit(asyncio.run(main(sample, Path(scratch) / "out")))
