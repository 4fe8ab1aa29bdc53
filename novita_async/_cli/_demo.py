"""``novita-async demo``: the whole pipeline with no key and no network.

Starts the emulator in-process on loopback, draws a few sample faces and scenes, runs a dozen jobs
(every face in every scene) through the batch runner with a live progress bar, and leaves the
images and ``index.html`` in the output folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import anyio
import anyio.to_thread

from .. import InstantIDRequest, NovitaClient
from ..batch import BatchOptions, BatchRunner, Job
from ._progress import BatchProgress
from ._run import format_summary, report_end, run_batch, write_gallery_if_possible

__all__ = ["demo"]

# Small pictures and quick tasks: the demo is about the wiring, and must finish in seconds.
_SIZE = 512
_TASK_SECONDS = 1.0


def _demo_jobs(
    faces: dict[str, Path], scenes: dict[str, Path], prompts: dict[str, str]
) -> list[Job]:
    from ._samples import SAMPLE_SCENES

    jobs = []
    for scene in SAMPLE_SCENES:
        for name, face in faces.items():
            job_id = f"{name}-{scene.name}"
            prompt = f"portrait of {name} {scene.prompt}"
            prompts[job_id] = prompt
            jobs.append(
                Job(
                    id=job_id,
                    face_images=[face],
                    ref_images=[scenes[scene.name]],
                    request=InstantIDRequest(prompt=prompt, width=_SIZE, height=_SIZE),
                )
            )
    return jobs


async def demo(ns: argparse.Namespace) -> int:
    try:
        from ..emulator import Emulator, EmulatorConfig
        from ._samples import write_samples
    except ImportError as exc:  # Pillow comes with the [emulator] extra
        extra = "pip install 'novita-async[emulator]'"
        raise SystemExit(f"novita-async demo needs the emulator extra: {extra} ({exc})") from None
    out = Path(ns.out)
    faces, scenes = await anyio.to_thread.run_sync(write_samples, out / "inputs")
    prompts: dict[str, str] = {}
    jobs = _demo_jobs(faces, scenes, prompts)
    config = EmulatorConfig(task_base_seconds=_TASK_SECONDS, task_jitter=0.5, seed=7)
    print(f"starting the emulator and running {len(jobs)} jobs into {out}/ ...")
    # Each demo starts afresh: a journal from an earlier demo names assets and tasks of an
    # emulator that is gone.
    with tempfile.TemporaryDirectory(prefix="novita-demo-") as scratch:
        options = BatchOptions(journal_path=Path(scratch) / "journal.jsonl")
        async with Emulator(config) as emulator:
            client = NovitaClient(
                emulator.api_key, base_url=emulator.base_url, assets_url=emulator.assets_url
            )
            async with client:
                with BatchProgress(len(jobs), plain=ns.no_progress) as progress:
                    runner = BatchRunner(client, out, options, on_event=progress.on_event)
                    end = await run_batch(runner, jobs, progress)
                    gallery = await write_gallery_if_possible(
                        out, prompts, progress, title="novita-async demo"
                    )
    if end.interrupted or end.stopped is not None or gallery is None:
        return report_end(end, out / "results.jsonl", gallery)
    where = await anyio.Path(out).resolve()
    print(format_summary(end.summary))
    print(f"images:  {where}/<job id>_0.png")
    print(f"gallery: {where / gallery.name}  (open it in a browser)")
    return end.status
