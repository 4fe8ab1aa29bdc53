"""A bulk job from a JSONL file, with the batch runner in Python.

Each line: {"id": ..., "face_images": [...], "ref_images": [...], "prompt": ..., other fields}.
Rerunning with the same output folder resumes: finished jobs are skipped, submitted ones followed.

    python examples/bulk_jsonl.py [JOBS.jsonl] [OUT]   # without arguments: makes a sample file
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _support import client, sample_pictures

from novita_async import BatchRunner, InstantIDRequest, Job
from novita_async.batch import BatchOptions


def read_jobs(path: Path) -> Iterator[Job]:
    """One Job per line, read lazily (the runner pulls jobs as it has room for them)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = json.loads(line)
            yield Job(
                id=str(fields.pop("id", number)),
                face_images=[path.parent / p for p in fields.pop("face_images")],
                ref_images=[path.parent / p for p in fields.pop("ref_images")],
                request=InstantIDRequest(**fields),
            )


def write_sample_jobs(folder: Path) -> Path:
    faces, refs = sample_pictures(folder / "pictures")
    path = folder / "jobs.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n, (face, ref) in enumerate((f, r) for f in faces for r in refs):
            line = {"id": f"job-{n}", "face_images": [f"pictures/{face.name}"],
                    "ref_images": [f"pictures/{ref.name}"], "prompt": f"portrait number {n}",
                    "width": 512, "height": 512}  # fmt: skip
            out.write(json.dumps(line) + "\n")
    return path


async def main(jobs_path: Path, out: Path) -> int:
    async with client() as novita:
        runner = BatchRunner(novita, out, BatchOptions(concurrency=20, rate=10.0))
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
        sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]))))
    with tempfile.TemporaryDirectory() as scratch:
        sample = write_sample_jobs(Path(scratch))
        sys.exit(asyncio.run(main(sample, Path(scratch) / "out")))
