"""The small commands: ``generate``, ``upload``, ``result``, ``models`` (one call each),
``status`` and ``journal repair`` (an output folder; no network, no key) and ``demo``.

Each returns the process exit status. Machine-readable output (file paths, asset ids, model
names) goes to stdout, one item a line; progress and notes go to stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import attrs

from .. import (
    ExitStatus,
    InstantIDRequest,
    Model,
    NovitaClient,
    TaskResult,
    TaskStatus,
    ValidationError,
)
from .._converter import converter
from .._files import looks_like_url
from ..batch import (
    JOURNAL_NAME,
    RESULTS_NAME,
    BatchOptions,
    BatchRunner,
    Job,
    RepairReport,
    RunStatus,
    job_ids,
    read_status,
)
from ..batch import repair_journal as repair_journal_file
from ._display import (
    UNKNOWN_ADVICE,
    BatchProgress,
    format_summary,
    plural,
    printable,
    printable_lines,
)
from ._gallery import read_results
from ._run import report_end, until_end, write_gallery_if_possible
from ._settings import (
    DemoSettings,
    GenerateSettings,
    ModelsSettings,
    RepairSettings,
    ResultSettings,
    StatusSettings,
    UploadSettings,
)


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


async def _existing(flag: str, paths: tuple[Path, ...]) -> tuple[Path, ...]:
    for path in paths:
        if not await anyio.Path(path).is_file():
            raise ValidationError(flag, str(path), "must name an existing file")
    return paths


def _progress_printer(enabled: bool) -> Any:
    last = ""

    def show(result: TaskResult) -> None:
        nonlocal last
        task = result.task
        percent = "" if task.progress_percent is None else f" {task.progress_percent:.0f}%"
        if enabled and (line := f"{task.status.value}{percent}") != last:
            last = line
            _note(f"  {result.task_id}: {line}")

    return show


async def _instant_id_task(client: NovitaClient, settings: GenerateSettings) -> str:
    """Upload the faces and references, submit: the task's id."""
    assert isinstance(settings.request, InstantIDRequest)
    faces = await _existing("--face", settings.faces)
    refs = await _existing("--ref", settings.refs)
    kps = None if settings.face_kps is None else await _existing("--face-kps", settings.face_kps)
    if kps is not None and len(kps) != len(faces):
        raise ValidationError(
            "--face-kps", f"{len(kps)} files", f"give one per --face ({len(faces)})"
        )
    ids = await client.upload_assets([*faces, *refs, *(kps or ())])
    request = attrs.evolve(
        settings.request,
        face_image_assets_ids=ids[: len(faces)],
        ref_image_assets_ids=ids[len(faces) : len(faces) + len(refs)],
        face_kps_assets_ids=None if kps is None else ids[len(faces) + len(refs) :],
    )
    return await client.submit(request)


async def _image_task(client: NovitaClient, settings: GenerateSettings) -> str:
    """Submit a v3 task, its input images (paths or URLs) read and sent inline: its id."""
    images: dict[str, str] = {}
    for flag, name, source in (
        ("--image", "image", settings.image),
        ("--mask-image", "mask_image", settings.mask_image),
    ):
        if source is not None:
            if not looks_like_url(source):
                await _existing(flag, (Path(source),))
            images[name] = source
    return await client.submit(settings.request, images=images)


async def generate(settings: GenerateSettings) -> int:
    async with settings.connection.client() as client:
        if isinstance(settings.request, InstantIDRequest):
            task_id = await _instant_id_task(client, settings)
        else:
            task_id = await _image_task(client, settings)
        # Printed at once: if the wait is interrupted, `novita-async result` picks the task up.
        _note(f"submitted task {task_id} ({settings.request.task})")
        done = await client.wait_for_task(
            task_id, on_progress=_progress_printer(not settings.plain)
        )
        files = await client.download_images(done, settings.out, stem=f"{task_id}-")
    seed = "" if done.extra.seed is None else f" (seed {done.extra.seed})"
    _note(f"task {task_id} succeeded{seed}: {len(files)} image(s)")
    for path in files:
        print(path)
    return ExitStatus.OK


async def upload(settings: UploadSettings) -> int:
    files = await _existing("FILE", settings.files)
    async with settings.connection.client() as client:
        ids = await client.upload_assets(files)
    for asset_id in ids:
        print(asset_id)
    return ExitStatus.OK


def _describe(result: TaskResult) -> list[str]:
    task = result.task
    rows = [("task_id", task.task_id), ("status", task.status.value)]
    if task.reason:
        rows.append(("reason", task.reason))
    if not task.status.is_final:
        if task.progress_percent is not None:
            rows.append(("progress", f"{task.progress_percent:.0f}%"))
        if task.eta is not None:
            rows.append(("eta", f"{task.eta:g}s"))
    if result.extra.seed is not None:
        rows.append(("seed", str(result.extra.seed)))
    rows.append(("images", str(len(result.images))))
    return [f"{name:<9}{value}" for name, value in rows]


async def result(settings: ResultSettings) -> int:
    task_id = settings.task_id
    async with settings.connection.client() as client:
        if settings.wait:
            answer = await client.wait_for_task(task_id)
        else:
            answer = await client.get_task_result(task_id)
        files: list[Path] = []
        if settings.download is not None and answer.status is TaskStatus.SUCCEED:
            files = await client.download_images(answer, settings.download, stem=f"{task_id}-")
    if settings.json:
        print(json.dumps(converter.unstructure(answer), indent=2, default=str))
    else:
        print(printable_lines(_describe(answer)))
    for path in files:
        print(path)
    if settings.download is not None and answer.status is not TaskStatus.SUCCEED:
        _note(f"nothing downloaded: the task is {answer.status.value} (add --wait to wait)")
        return ExitStatus.FAILED
    return ExitStatus.OK if answer.status is not TaskStatus.FAILED else ExitStatus.FAILED


async def models(settings: ModelsSettings) -> int:
    async with settings.connection.client() as client:
        # list_models is an async generator: close it when --limit stops early.
        listing = cast(
            AsyncGenerator[Model, None],
            client.list_models(
                types=settings.model_type,
                is_sdxl=True if settings.sdxl else None,
                query=settings.query,
            ),
        )
        count = 0
        async with aclosing(listing) as found:
            async for model in found:
                print(printable(model.sd_name))
                count += 1
                if settings.limit is not None and count >= settings.limit:
                    break
    return ExitStatus.OK


# --- status OUT: safe while a run holds the folder; exit 1 when the journal is damaged or, with
# --verify (each image against the SHA-256 the journal recorded), an image is missing or damaged.


_MISSING = (
    "recorded succeeded, an image missing or damaged: a rerun with these jobs fetches them again "
    "from their tasks, at no cost"
)


def task_counts(results: Path) -> dict[str, dict[str, int]]:
    """The jobs of ``results.jsonl`` by task and status, if its lines name their tasks (a v3
    job's line does; an InstantID job's says nothing: ``instant-id``); else empty."""
    records = read_results(results)
    if not any("task" in record for record in records):
        return {}
    counts: dict[str, Counter[str]] = {}
    for record in records:
        task = record.get("task", InstantIDRequest.task)
        counts.setdefault(str(task), Counter())[str(record.get("status", "unknown"))] += 1
    return {task: dict(sorted(by_status.items())) for task, by_status in counts.items()}


def format_status(status: RunStatus, tasks: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """The folder, then one row per kind of job, with what it means, then (``tasks``) one row
    per task type of results.jsonl."""
    lines = [f"{status.out_dir}: journal {status.journal_path}"]
    if not status.journal_found:
        lines.append(
            "  no journal: nothing has run here yet (or its journal is elsewhere: --journal)"
        )
    holding = ", by a run holding the folder now" if status.in_use else ""
    if status.last_run is not None:
        lines.append(f"  last written {status.last_run:%Y-%m-%d %H:%M:%S} UTC{holding}")
    elif status.in_use:
        lines.append("  a run holds the folder now")
    reasons = ", ".join(f"{r}: {n}" for r, n in status.failures_by_reason.items())
    who = "the run" if status.in_use else "a rerun"
    rows: list[tuple[str, int | None, str]] = [
        ("jobs known", status.jobs, ""),
        ("succeeded", status.succeeded, _images(status)),
        ("images missing", status.outputs_missing, _MISSING),
        ("failed", status.failed, reasons),
        ("submitted, not ended", status.unfinished, f"{who} follows their tasks"),
        ("unknown outcome", status.unknown_outcome, _unknown(status)),
        ("retryable", status.retryable, "RETRIES_EXHAUSTED: a plain rerun tries them again"),
    ]
    rows = [row for row in rows if row[0] in ("jobs known", "succeeded", "failed") or row[1]]
    if status.never_submitted is not None:  # known only from the job file
        rows.append(("never submitted", status.never_submitted, "in the job file only"))
    for label, count, note in rows:
        lines.append(f"  {label:<21}{count or 0:>7}" + (f"  ({note})" if note else ""))
    if tasks:
        lines.append("  by task (results.jsonl):")
        for task, by_status in tasks.items():
            said = ", ".join(f"{count} {name}" for name, count in by_status.items())
            lines.append(f"    {task:<19}{sum(by_status.values()):>7}  ({said})")
    ended = status.succeeded + status.failed
    if not status.in_use and status.results_listed not in (None, ended):
        lines.append(
            f"  results.jsonl lists {plural(status.results_listed or 0, 'job', 'jobs')}, the "
            f"journal {ended} ended: the next run brings results.jsonl up to date"
        )
    if status.damaged_lines:
        shown = ", ".join(map(str, status.damaged_lines[:10]))
        more = " ..." if len(status.damaged_lines) > 10 else ""
        lines.append(
            f"  the journal is damaged: {plural(len(status.damaged_lines), 'line', 'lines')} "
            f"({shown}{more}) cannot be read, so jobs may be missing above; no run starts "
            f"until `novita-async journal repair {status.out_dir}`"
        )
    return printable_lines(lines)


def _images(status: RunStatus) -> str:
    if not status.succeeded and not status.outputs_missing:
        return ""
    checked = "verified" if status.verified else "on disk"
    text = f"{plural(status.images - status.images_damaged, 'image', 'images')} {checked}"
    if status.images_missing:
        text += f", {status.images_missing} missing"
    if status.images_damaged:
        text += f", {status.images_damaged} damaged"
    if status.unverifiable:
        text += f", {status.unverifiable} with no size or SHA-256 recorded (checked there only)"
    return text


def _unknown(status: RunStatus) -> str:
    if status.in_use and status.unanswered:
        return f"{status.unanswered} awaiting their submission's answer; a task may be billed"
    return UNKNOWN_ADVICE


async def status(settings: StatusSettings) -> int:
    ids: set[str] | None = None
    if settings.jobs is not None:
        if not await anyio.Path(settings.jobs).is_file():
            raise ValidationError("--jobs", str(settings.jobs), "must name an existing job file")
        ids = await job_ids(settings.jobs)
    found = await anyio.to_thread.run_sync(
        lambda: read_status(settings.out, settings.journal, job_ids=ids, verify=settings.verify)
    )
    tasks = await anyio.to_thread.run_sync(task_counts, Path(settings.out) / RESULTS_NAME)
    if settings.json:
        shown = converter.unstructure(found)
        if tasks:
            shown["tasks"] = tasks
        print(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        print(format_status(found, tasks))
    damaged = settings.verify and (found.images_missing or found.images_damaged)
    return ExitStatus.FAILED if found.damaged_lines or damaged else ExitStatus.OK


# --- journal repair OUT (a journal a run holds is refused: exit 2) -------------------------------


def _listed(items: tuple[object, ...]) -> str:
    shown = ", ".join(map(str, items[:20]))
    return shown + (f" ... ({len(items)} in all)" if len(items) > 20 else "")


def format_repair(report: RepairReport) -> str:
    """What the repair did, a line for each part of it."""
    if report.backup is None:
        return f"{report.path}: no damaged line; {report.kept} records, nothing to repair"
    lines = [
        f"{report.path}: repaired; {report.kept} good records kept",
        f"  damaged lines: {_listed(report.damaged_lines)}",
    ]
    if report.marked_unknown:
        lines.append(
            f"  marked SUBMIT_OUTCOME_UNKNOWN: {_listed(report.marked_unknown)} ({UNKNOWN_ADVICE})"
        )
    if report.unattributed_lines:
        lines.append(
            f"  lines naming no job that could be read: {_listed(report.unattributed_lines)} "
            "(look at them in the damaged original)"
        )
    lines.append(f"  the damaged original is kept as {report.backup}")
    return printable_lines(lines)


async def repair_journal(settings: RepairSettings) -> int:
    path = settings.journal or Path(settings.out) / JOURNAL_NAME
    report = await anyio.to_thread.run_sync(repair_journal_file, path)
    print(format_repair(report))
    return ExitStatus.OK


# --- demo: the whole pipeline with no key and no network, the emulator in-process; every sample
# face in every scene, small pictures and quick tasks (it is about the wiring: seconds).
_DEMO_SIZE = 512
_DEMO_TASK_SECONDS = 1.0


async def demo(settings: DemoSettings) -> int:
    try:
        from ..emulator import Emulator, EmulatorConfig
        from ..emulator._images import SAMPLE_SCENES, write_samples
    except ImportError as exc:  # Pillow comes with the [emulator] extra
        extra = "pip install 'novita-async[emulator]'"
        raise SystemExit(f"novita-async demo needs the emulator extra: {extra} ({exc})") from None
    out = settings.out
    faces, scenes = await anyio.to_thread.run_sync(write_samples, out / "inputs")
    prompts: dict[str, str] = {}
    jobs = []
    for scene in SAMPLE_SCENES:
        for name, face in faces.items():
            job_id = f"{name}-{scene.name}"
            prompts[job_id] = prompt = f"portrait of {name} {scene.prompt}"
            request = InstantIDRequest(prompt=prompt, width=_DEMO_SIZE, height=_DEMO_SIZE)
            jobs.append(
                Job(id=job_id, face_images=[face], ref_images=[scenes[scene.name]], request=request)
            )
    config = EmulatorConfig(task_base_seconds=_DEMO_TASK_SECONDS, task_jitter=0.5, seed=7)
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
                with BatchProgress(len(jobs), plain=settings.plain) as progress:
                    runner = BatchRunner(client, out, options, on_event=progress.on_event)
                    end = await until_end(lambda: runner.run_all(jobs), progress, runner)
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
