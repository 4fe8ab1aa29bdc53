"""The journal's records: their classes, their line format, and reading a journal back.

Each record is one line of compact JSON whose last key ``c`` is a checksum: the CRC-32 (8 hex
digits) of the line's JSON without ``c``. A line that does not end in a newline is torn (a crash
mid-write) and only the last line may be: it is cut. Any other line that is not JSON, fails its
checksum or is not a record this version knows is **damage**: :class:`Journal` refuses to open
(:class:`JournalDamagedError`, naming the lines) until the user repairs it with
:func:`repair_journal` (``novita-async journal repair OUT``), which keeps every good record and
marks the jobs whose records were lost as of unknown outcome, so nothing is resubmitted silently.
Lines written before checksums existed (no ``c``) are read as they are.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypeAlias

import attrs
import cattrs

from .._converter import converter
from .._exceptions import NovitaError
from ._job import JobError

__all__ = [
    "AssetRecord",
    "FailedRecord",
    "JournalDamagedError",
    "JournalRecord",
    "JournalScan",
    "NotSubmittedRecord",
    "SubmittedRecord",
    "SubmittingRecord",
    "SucceededRecord",
    "decode_record",
    "encode_record",
    "read_records",
    "scan_journal",
]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once, not per line


def _now() -> float:
    return round(time.time(), 3)


@attrs.frozen(kw_only=True)
class AssetRecord:
    """An input content (by its SHA-256) was uploaded to ``endpoint`` as ``asset_id``.

    ``endpoint`` is the asset URL's origin and path (never its user, password or query): an id
    is reused only by a run that uploads to the same endpoint. Records written before it existed
    have none, and their ids are never reused (see :func:`~._journal.apply_record`)."""

    type: Literal["asset"] = "asset"
    sha256: str
    asset_id: str = attrs.field(validator=attrs.validators.min_len(1))
    endpoint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SubmittingRecord:
    """Job ``id`` is about to be submitted: written before the POST is sent."""

    type: Literal["submitting"] = "submitting"
    id: str
    fingerprint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class NotSubmittedRecord:
    """Job ``id``'s submission was refused by the service (or never sent): no task exists."""

    type: Literal["not_submitted"] = "not_submitted"
    id: str
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SubmittedRecord:
    """Job ``id`` was submitted: the POST answered with ``task_id``."""

    type: Literal["submitted"] = "submitted"
    id: str
    task_id: str | None = None
    fingerprint: str | None = None
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class SucceededRecord:
    """Job ``id`` succeeded: its ``files`` are on disk, each of ``sizes[n]`` bytes with the
    SHA-256 ``digests[n]`` (hex). A journal written before sizes and digests were kept has
    neither: its files can only be checked for being there."""

    type: Literal["succeeded"] = "succeeded"
    id: str
    task_id: str | None = None
    fingerprint: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    digests: tuple[str, ...] = ()
    t: float = attrs.field(factory=_now)


@attrs.frozen(kw_only=True)
class FailedRecord:
    """Job ``id`` failed with ``error``."""

    type: Literal["failed"] = "failed"
    id: str
    task_id: str | None = None
    fingerprint: str | None = None
    error: JobError | None = None
    files: tuple[str, ...] = ()
    """Images of an earlier request still in OUT (``JOB_CHANGED``), or of a job that failed after
    some landed; never presented as this job's result."""
    t: float = attrs.field(factory=_now)


JournalRecord: TypeAlias = (
    AssetRecord
    | SubmittingRecord
    | NotSubmittedRecord
    | SubmittedRecord
    | SucceededRecord
    | FailedRecord
)
"""One line of the journal; the converter tells the kinds apart by their ``type``."""


_structure_record = converter.get_structure_hook(JournalRecord)
# What reading a line can raise: not JSON, or JSON that is not a record the converter knows.
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, cattrs.BaseValidationError)


def _checksum(body: bytes) -> str:
    return f"{zlib.crc32(body):08x}"


def encode_record(record: JournalRecord) -> bytes:
    """The record's line: compact JSON with its checksum as the last key, and a newline."""
    body = _ENCODER.encode(converter.unstructure(record)).encode()
    return body[:-1] + b',"c":"' + _checksum(body).encode() + b'"}\n'


def decode_record(line: bytes) -> JournalRecord:
    """The record of one whole line; ``ValueError`` if it is damaged."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checksum = data.pop("c", None)
        if checksum is not None and checksum != _checksum(_ENCODER.encode(data).encode()):
            raise ValueError("checksum mismatch")
        record: JournalRecord = _structure_record(data, JournalRecord)
    except _UNREADABLE as exc:
        raise ValueError(str(exc)) from exc
    return record


@attrs.frozen
class JournalScan:
    """What a journal file holds: its good records, the numbers (from 1) of its damaged lines,
    and whether its last line was torn by a crash."""

    records: tuple[JournalRecord, ...]
    damaged: tuple[int, ...]
    torn_tail: bool
    lines: int


def scan_journal(path: Path) -> JournalScan:
    """Read every line of the journal at ``path`` (none if it does not exist)."""
    records: list[JournalRecord] = []
    damaged: list[int] = []
    torn = False
    number = 0
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return JournalScan((), (), False, 0)
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                torn = True  # only ever the last line
                break
            try:
                records.append(decode_record(raw))
            except ValueError:
                damaged.append(number)
    return JournalScan(tuple(records), tuple(damaged), torn, number)


def read_records(path: Path) -> Iterator[JournalRecord]:
    """The journal's good records in order (a torn last line left out); raises
    :class:`JournalDamagedError` if any other line is damaged."""
    scan = scan_journal(path)
    if scan.damaged:
        raise JournalDamagedError(path, scan.damaged)
    yield from scan.records


class JournalDamagedError(NovitaError):
    """Lines of the journal other than a torn last one cannot be read: the record of money spent
    may be incomplete, so the run refuses to start until the journal is repaired."""

    def __init__(self, path: Path, lines: tuple[int, ...] | list[int]) -> None:
        self.path = path
        self.lines = tuple(lines)
        shown = ", ".join(map(str, self.lines[:10])) + (" ..." if len(self.lines) > 10 else "")
        where = "line" if len(self.lines) == 1 else "lines"
        super().__init__(
            f"the journal {path} is damaged: {where} {shown} cannot be read. Nothing was sent. "
            f"Run `novita-async journal repair {path.parent}` to keep every good record and "
            "mark the jobs whose records were lost as of unknown outcome"
        )

    @property
    def reason(self) -> str:
        return "JOURNAL_DAMAGED"


_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def ids_in_damage(line: bytes) -> str | None:
    """The job id a damaged line names, when it can still be read from it."""
    match = _ID.search(line)
    if match is None:
        return None
    try:
        value = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None
