"""What a finished (or killed) run must look like on disk, and where secrets must never appear.

Each check returns a list of problems (empty when all is well), so a test can assert ``== []`` and
see every violation at once, and the full-scale script can print them.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

# A key long and odd enough that finding it anywhere is certainly a leak.
API_KEY = "sk-reliability-7f3c9e2a51d84b6f0c1a"
# Every signed image URL carries this; a log line with it has leaked a signed query string.
SIGNATURE_MARK = "X-Amz-Signature"

JOURNAL_NAME = ".novita-journal.jsonl"
RESULTS_NAME = "results.jsonl"
GALLERY_NAME = "index.html"
LOCK_NAME = ".novita-lock"
RUNNER_FILES = frozenset(
    {JOURNAL_NAME, JOURNAL_NAME + ".reserve", RESULTS_NAME, GALLERY_NAME, LOCK_NAME}
)
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class LeakWatch(logging.Handler):
    """Formats every log record (any level, any logger, tracebacks included) and remembers those
    that carry a secret. Install it on the root logger with the level at DEBUG."""

    def __init__(self, *secrets: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.secrets = tuple(s for s in secrets if s)
        self.records = 0
        self.leaks: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        text = self.format(record)  # the formatter appends the traceback, if any
        for secret in self.secrets:
            if secret in text:
                self.leaks.append(f"log record carries {secret[:12]}...: {text[:300]}")

    def __enter__(self) -> LeakWatch:
        root = logging.getLogger()
        self._old_level = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._old_level)


def leaks_in_texts(texts: Mapping[str, str], *secrets: str) -> list[str]:
    """``texts`` maps a description (a file, "repr of outcome x") to its text."""
    return [
        f"{secret[:12]}... appears in {where}"
        for where, text in texts.items()
        for secret in secrets
        if secret and secret in text
    ]


def leaks_in_folder(folder: Path, *secrets: str) -> list[str]:
    """Every file under ``folder`` (images included: bytes are bytes) searched for each secret."""
    problems = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets:
            if secret and secret.encode() in data:
                problems.append(f"{secret[:12]}... appears in {path.relative_to(folder)}")
    return problems


def read_results(out: Path) -> list[dict[str, Any]]:
    path = out / RESULTS_NAME
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def decode_problem(path: Path, expected_type: str | None = None) -> str | None:
    """Why ``path`` is not a complete image (of ``expected_type``), or None if it is one."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structure and checksums
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # every pixel decodes: a truncated body fails here
            kind = image.format
    except Exception as exc:
        return f"{path.name}: not a decodable image ({type(exc).__name__}: {exc})"
    if expected_type is not None and kind != FORMATS.get(expected_type, expected_type.upper()):
        return f"{path.name}: {kind} where {expected_type} was asked for"
    return None


def results_problems(out: Path, job_ids: Iterable[str]) -> list[str]:
    """results.jsonl has exactly one well-formed line per job, and nothing else."""
    wanted = sorted(job_ids)
    try:
        rows = read_results(out)
    except (OSError, ValueError) as exc:
        return [f"results.jsonl unreadable: {exc}"]
    problems = []
    ids = [str(row.get("id")) for row in rows]
    if sorted(ids) != wanted:
        missing = sorted(set(wanted) - set(ids))[:5]
        extra = sorted(set(ids) - set(wanted))[:5]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        problems.append(
            f"results.jsonl: {len(rows)} lines for {len(wanted)} jobs "
            f"(missing {missing}, unexpected {extra}, twice {twice})"
        )
    for row in rows:
        if row.get("status") == "succeeded":
            if not row.get("files") or row.get("error") is not None or not row.get("task_id"):
                problems.append(f"results.jsonl: incoherent success line {row}")
        elif row.get("status") == "failed":
            error = row.get("error")
            if not isinstance(error, dict) or not error.get("reason") or not error.get("type"):
                problems.append(f"results.jsonl: failure without a reason: {row}")
        else:
            problems.append(f"results.jsonl: status neither succeeded nor failed: {row}")
    return problems


def tree_problems(
    out: Path, rows: list[dict[str, Any]], expected_types: Mapping[str, str] | None = None
) -> list[str]:
    """Every file in OUT is the runner's own, or a complete image ``<job id>_<n>.<ext>`` some
    result line lists (or, for a job that failed mid-way, a complete image of it); nothing
    temporary."""
    listed = {name for row in rows for name in row.get("files") or ()}
    ids = {str(row["id"]) for row in rows}
    problems = []
    for path in sorted(p for p in out.rglob("*") if not p.is_dir()):
        relative = path.relative_to(out).as_posix()
        if relative in RUNNER_FILES:
            continue
        parts = relative.split("/")
        if parts[0] == ".novita-inputs" and len(parts) == 2 and not parts[1].startswith("."):
            continue  # the CLI's cache of inputs fetched from URLs
        if path.is_symlink() or not path.is_file():
            problems.append(f"{relative}: not a regular file")
            continue
        job_id, _, image = relative.rpartition("_")
        if len(parts) != 1 or job_id not in ids or relative.startswith("."):
            problems.append(f"{relative}: a file that is neither an image nor the runner's own")
            continue
        if relative not in listed and not image.split(".")[0].isdigit():
            # A job that failed after some of its images landed: they must still be whole.
            problems.append(f"{relative}: unexpected name")
            continue
        expected = (expected_types or {}).get(job_id)
        if (problem := decode_problem(path, expected)) is not None:
            problems.append(problem)
    for name in sorted(listed):
        if not (out / name).is_file():
            problems.append(f"{name}: listed in results.jsonl but missing")
    return problems


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, int]:
    """Files under ``folder`` (except under ``skip``) with their sizes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        if skip is not None and Path(root) == skip.parent:
            dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for name in files:
            path = Path(root, name)
            if skip is not None and skip in path.parents:
                continue
            found[path.relative_to(folder).as_posix()] = path.stat().st_size
    return found
