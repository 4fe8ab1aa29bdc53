"""``run --summary-json PATH`` and ``run --json``: how a run ended, as JSON for a scheduler.

One document, :class:`RunReport` through the one converter: the command's exit status, the run's
:class:`BatchSummary` (None when the command ended before its run did, with ``error`` saying
why), for a stopped run the stop's ``reason`` and one-line ``message``, and where the results and
the gallery are. ``--summary-json`` writes it atomically (a reader never sees half of it, and a
report from an earlier run is replaced even when this one fails before it starts); ``--json``
prints it on stdout instead of the text summary (the progress lines then go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import attrs

from .._atomic import write_atomically
from .._config import ENV_API_KEY
from .._converter import converter
from .._exceptions import LocalIOError, RunStoppedError, ValidationError
from .._redact import scrub
from ..batch import BatchSummary, is_run_output
from ._printable import printable

__all__ = ["ReportTo", "RunReport", "StopReport"]


@attrs.frozen
class StopReport:
    """The run-level cause that stopped a run: its ``reason`` (``INVALID_API_KEY``,
    ``DISK_FULL``, ``OUTAGE``...) and the one line naming it and its fix."""

    reason: str
    message: str

    @classmethod
    def of(cls, stop: RunStoppedError) -> StopReport:
        return cls(stop.reason, str(stop))


@attrs.frozen(kw_only=True)
class RunReport:
    """How ``novita-async run`` ended."""

    exit_status: int
    summary: BatchSummary | None = None
    stop: StopReport | None = None
    error: str | None = None
    """What ended the command before its run did (bad usage, a damaged journal...)."""
    results: str | None = None
    gallery: str | None = None


@attrs.frozen
class ReportTo:
    """Where the run's :class:`RunReport` goes: ``path`` (``--summary-json``), and stdout
    (``--json``)."""

    path: Path | None = None
    stdout: bool = False
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> ReportTo:
        path = getattr(ns, "summary_json", None)
        secrets = (getattr(ns, "api_key", None) or "", os.environ.get(ENV_API_KEY, ""))
        return cls(
            Path(path) if path is not None else None, bool(getattr(ns, "json", False)), secrets
        )

    @property
    def wanted(self) -> bool:
        return self.path is not None or self.stdout

    def check(self, out: Path, inputs: tuple[Path | None, ...]) -> None:
        """Refuse, before anything is sent, a path the report cannot be written to, or one that
        would write over the run's ``inputs`` (its job file, its journal) or its output."""
        if self.path is None:
            return
        if not self.path.parent.is_dir() or self.path.is_dir():
            raise ValidationError(
                "--summary-json", str(self.path), "must be a file in an existing folder"
            )
        target = self.path.resolve()
        if is_run_output(self.path, out) or any(
            other is not None and target == other.resolve() for other in inputs
        ):
            raise ValidationError(
                "--summary-json", str(self.path), "must not be a file the run reads or writes"
            )

    def write(self, report: RunReport) -> None:
        """Write ``report`` where it is wanted; the file first, so that a scheduler reading
        stdout to its end finds the file in place."""
        if not self.wanted:
            return
        text = scrub(json.dumps(converter.unstructure(report), indent=2), *self.secrets) + "\n"
        if self.path is not None:
            write_atomically(self.path, [text.encode()])
        if self.stdout:
            sys.stdout.write(text)
            sys.stdout.flush()

    def write_error(self, exit_status: int, message: str) -> None:
        """Report a command that ended before its run did; a report that cannot be written is
        said on stderr, the command's error stays the one to show."""
        try:
            self.write(RunReport(exit_status=exit_status, error=message))
        except (OSError, LocalIOError) as exc:
            with contextlib.suppress(OSError):
                message = f"novita-async: the run report could not be written: {exc}"
                print(printable(message), file=sys.stderr)
