"""``novita-async status OUT``: where the run of an output folder stands; no network, no key.

A short table (or, with ``--json``, :class:`~novita_async.batch.RunStatus` through the one
converter), read by :func:`~novita_async.batch.read_status`; safe while a run holds the folder.
``--jobs JOBS.jsonl`` also counts the jobs of that file the journal does not know (never
submitted), reading only their ids, as ``run`` would name them. Each image of a succeeded job
is checked to be there, of the size recorded; ``--verify`` also hashes it against the SHA-256
the journal recorded, as ``rclone check`` does. Exit status 0, or 1 when the journal is damaged
(``novita-async journal repair OUT``) or, with ``--verify``, an image is missing or damaged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anyio
import anyio.to_thread

from .._converter import converter
from .._exceptions import ValidationError
from ..batch import RunStatus, read_status
from ._jobfile import _LineProblem, _lines, _load
from ._printable import printable_lines

__all__ = ["add_status_arguments", "format_status", "job_ids", "status"]

_EXIT_OK = 0
_EXIT_DAMAGED = 1


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the run's output folder")
    parser.add_argument(
        "--journal", default=None, metavar="PATH", help="the run's journal if not OUT's"
    )
    parser.add_argument(
        "--jobs",
        default=None,
        metavar="JOBS.jsonl",
        help="the run's job file: also count its jobs never submitted",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every image of the succeeded jobs against the SHA-256 the journal recorded; "
        "exit 1 if one is missing or damaged",
    )


async def job_ids(path: Path) -> set[str]:
    """The ids of the jobs of a job file, as ``run`` names them (a line's id defaults to its
    number), whether or not the rest of the line is valid."""
    ids: set[str] = set()
    line = 0
    async for text in _lines(path):
        line += 1
        if not text.strip():
            continue
        try:
            job_id, _ = _load(text, line)
        except _LineProblem:
            job_id = str(line)  # an invalid line is still a job of the run, under its number
        ids.add(job_id)
    return ids


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def format_status(status: RunStatus) -> str:
    """The status as a few lines: the folder, then one row per kind of job, with what it means."""
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
    always: list[tuple[str, int | None, str]] = [
        ("jobs known", status.jobs, ""),
        ("succeeded", status.succeeded, _images(status)),
        ("failed", status.failed, reasons),
    ]
    if status.outputs_missing:
        always.insert(
            2,
            (
                "images missing",
                status.outputs_missing,
                "recorded succeeded, an image missing or damaged: a rerun with these jobs "
                "fetches them again from their tasks, at no cost",
            ),
        )
    when_any: list[tuple[str, int | None, str]] = [
        ("submitted, not ended", status.unfinished, f"{who} follows their tasks"),
        ("unknown outcome", status.unknown_outcome, _unknown(status)),
        ("retryable", status.retryable, "RETRIES_EXHAUSTED: a plain rerun tries them again"),
    ]
    rows = always + [row for row in when_any if row[1]]
    if status.never_submitted is not None:  # known only from the job file
        rows.append(("never submitted", status.never_submitted, "in the job file only"))
    for label, count, note in rows:
        lines.append(f"  {label:<21}{count or 0:>7}" + (f"  ({note})" if note else ""))
    ended = status.succeeded + status.failed
    if not status.in_use and status.results_listed not in (None, ended):
        lines.append(
            f"  results.jsonl lists {_count(status.results_listed or 0, 'job', 'jobs')}, the "
            f"journal {ended} ended: the next run brings results.jsonl up to date"
        )
    if status.damaged_lines:
        shown = ", ".join(map(str, status.damaged_lines[:10]))
        more = " ..." if len(status.damaged_lines) > 10 else ""
        lines.append(
            f"  the journal is damaged: {_count(len(status.damaged_lines), 'line', 'lines')} "
            f"({shown}{more}) cannot be read, so jobs may be missing above; no run starts "
            f"until `novita-async journal repair {status.out_dir}`"
        )
    return printable_lines(lines)


def _images(status: RunStatus) -> str:
    if not status.succeeded and not status.outputs_missing:
        return ""
    checked = "verified" if status.verified else "on disk"
    text = f"{_count(status.images - status.images_damaged, 'image', 'images')} {checked}"
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
    return (
        "a task may exist and be billed; look before paying again: rerun with "
        "--retry-unknown-submits to submit them anyway"
    )


async def status(ns: argparse.Namespace) -> int:
    ids: set[str] | None = None
    if ns.jobs is not None:
        jobs = Path(ns.jobs)
        if not await anyio.Path(jobs).is_file():
            raise ValidationError("--jobs", str(jobs), "must name an existing job file")
        ids = await job_ids(jobs)
    found = await anyio.to_thread.run_sync(
        lambda: read_status(ns.out, ns.journal, job_ids=ids, verify=ns.verify)
    )
    if ns.json:
        print(json.dumps(converter.unstructure(found), indent=2, ensure_ascii=False))
    else:
        print(format_status(found))
    if found.damaged_lines:
        return _EXIT_DAMAGED
    if ns.verify and (found.images_missing or found.images_damaged):
        return _EXIT_DAMAGED
    return _EXIT_OK
