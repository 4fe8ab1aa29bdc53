"""``novita-async journal repair OUT``: make a damaged journal usable again, paying nothing twice.

:func:`~novita_async.batch.repair_journal` keeps every good record, marks the jobs whose records
were lost as of unknown outcome (``SUBMIT_OUTCOME_UNKNOWN``: a rerun does not send them again
unless told to) and keeps the damaged original beside the journal. This prints what it did. A
journal a run holds is refused (exit status 2); there is no network and no key involved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio.to_thread

from ..batch import RepairReport, repair_journal
from ..batch._journal import JOURNAL_NAME
from ._printable import printable_lines

__all__ = ["add_journal_arguments", "format_repair", "journal"]


def add_journal_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    repair = actions.add_parser(
        "repair",
        parents=[common],
        help="keep every good record of a damaged journal; mark the jobs whose records were "
        "lost as of unknown outcome",
        description="Keep every good record of OUT's damaged journal, mark the jobs whose "
        "records were lost as of unknown outcome (SUBMIT_OUTCOME_UNKNOWN: never sent again "
        "unless --retry-unknown-submits), and keep the damaged original beside it.",
    )
    repair.add_argument("out", metavar="OUT", help="the run's output folder")
    repair.add_argument(
        "--journal", default=None, metavar="PATH", help="the run's journal if not OUT's"
    )


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
            f"  marked SUBMIT_OUTCOME_UNKNOWN: {_listed(report.marked_unknown)} (a task may "
            "exist and be billed; look before paying again: rerun with --retry-unknown-submits "
            "to submit them anyway)"
        )
    if report.unattributed_lines:
        lines.append(
            f"  lines naming no job that could be read: {_listed(report.unattributed_lines)} "
            "(look at them in the damaged original)"
        )
    lines.append(f"  the damaged original is kept as {report.backup}")
    return printable_lines(lines)


async def journal(ns: argparse.Namespace) -> int:
    path = Path(ns.journal) if ns.journal is not None else Path(ns.out) / JOURNAL_NAME
    report = await anyio.to_thread.run_sync(repair_journal, path)
    print(format_repair(report))
    return 0
