"""``novita-async run --dry-run``: what a run would do and pay for, deciding every line as the
run would (:func:`novita_async.batch.dry_run`), with no key, nothing sent to the API and nothing
written in the output folder (inputs named by URL are fetched to a temporary folder, to check
they are images). Exit 0 when every line can run, 1 when some cannot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from .._converter import converter
from ..batch import BatchOptions, DryRun, InvalidJob, Job, dry_run
from ._printable import printable_lines

__all__ = ["format_dry_run", "print_dry_run"]


async def print_dry_run(
    jobs: AsyncIterator[Job | InvalidJob],
    out: Path,
    options: BatchOptions,
    *,
    as_json: bool,
    stored: Mapping[str, int] | None = None,
    assets_url: str | None = None,
) -> bool:
    """Decide what a run of ``jobs`` into ``out`` would do, print it; True if every job can run.
    ``stored``: an object-store OUT's objects and sizes, ``assets_url`` the uploads' endpoint
    (see :func:`dry_run`)."""
    plan = await dry_run(jobs, out, options, stored=stored, assets_url=assets_url)
    if as_json:
        print(json.dumps(converter.unstructure(plan), indent=2))
    else:
        print(format_dry_run(plan, options.rate))
    return plan.ok


def format_dry_run(plan: DryRun, rate: float | None) -> str:
    lines = [
        "dry run: nothing was sent",
        f"{plan.jobs} jobs: {plan.done} already done, {plan.failed} failed earlier (left alone; "
        f"--retry-failed runs them again), {plan.to_submit} to submit, {plan.to_follow} "
        f"submitted earlier to follow, {plan.unknown} of unknown outcome, {plan.changed} "
        "changed since their task was made"
        + (
            f", {plan.to_restore} with images missing to fetch again from their tasks (free)"
            if plan.to_restore
            else ""
        ),
        f"{plan.to_submit} tasks and {plan.images} images would be paid for; "
        f"{plan.uploads} distinct files would be uploaded",
    ]
    if plan.seconds is not None:
        lines.append(f"at --rate {rate:g}: about {plan.seconds:.1f}s of submissions")
    if plan.problems:
        lines.append(f"{len(plan.problems)} jobs cannot run as given:")
        lines += [f"  {p.job_id}: {p.reason}: {p.message}" for p in plan.problems]
    return printable_lines(lines)
