"""The journal of an object-store output, kept in the store as it grows: segments.

The local :class:`~._journal.Journal` (in the staging folder) stays the working copy; a
:class:`JournalMirror` copies what it appends into the store as **segments**,
``<key_prefix>/<seq:010d>.jsonl``, each holding the lines written since the one before, each
written once (``mode="create"``: a second run writing the same journal fails loudly with
``STORAGE_CONFLICT`` instead of overwriting the first's records).

- :meth:`JournalMirror.pull`, before the journal opens: the segments, in order, become the local
  file, followed by the local lines no segment holds (a run on the same machine that crashed
  before they went up). A run on a machine with an empty staging folder resumes from the store;
  a store whose journal is gone (a wiped prefix) or behind gets the staging copy's lines (the run
  then checks the outputs and fetches the missing ones again from their tasks). When the two
  tell different stories (the staging copy knows a task the store's journal does not, or another
  task for the same job), the run is refused (:class:`JournalsDisagreeError`), naming both.
- :meth:`JournalMirror.durable`, awaited by the submitter between a job's intent (``submitting``)
  and its POST: returns once every line written before the call is in a segment. Callers that
  arrive while a segment is being written share the next one (group commit): one PUT per wave of
  submissions, not per submission.
- :meth:`JournalMirror.keep_flushing`: the other records go up every :data:`JOURNAL_FLUSH_SECONDS`.
- :meth:`JournalMirror.close`: the last lines go up, then everything is compacted into one
  segment and the older ones are deleted. A segment that repeats everything before it replaces
  it, so a crash between the two steps loses nothing and doubles nothing.

**What losing the node can lose**: the lines written after the last segment, at most
:data:`JOURNAL_FLUSH_SECONDS` of records. Never an intent: each is in a segment before its POST
is sent, so a lost ``submitted`` record makes that job a submission of unknown outcome
(``SUBMIT_OUTCOME_UNKNOWN``, not sent again unless asked), never a second payment; a lost
``succeeded`` record makes the rerun follow the task again and upload the same images again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio

from .._atomic import local_io, write_atomically
from .._concurrency import map_limited
from .._exceptions import ConfigurationError, LocalIOError, StorageError
from ._destination import ObjectOutput
from ._records import (
    AssetRecord,
    FailedRecord,
    SubmittedRecord,
    SucceededRecord,
    decode_record,
)

__all__ = [
    "JOURNAL_FLUSH_SECONDS",
    "JOURNAL_KEY",
    "JournalMirror",
    "JournalsDisagreeError",
    "segment_key",
]

JOURNAL_FLUSH_SECONDS = 1.0
"""How often records other than intents go up to the store."""
JOURNAL_KEY = ".novita-journal"
"""The key prefix of an object-store output's journal segments."""

_SEGMENT = re.compile(r"(\d{10})\.jsonl")
_READ_AT_ONCE = 16


def segment_key(key_prefix: str, seq: int) -> str:
    return f"{key_prefix}/{seq:010d}.jsonl"


class JournalsDisagreeError(ConfigurationError):
    """The store's journal and the staging folder's copy of it are of different runs: which one
    is right is the user's call, so nothing is sent until one of them is removed."""

    def __init__(self, stored: str, local: Path, detail: str) -> None:
        self.stored = stored
        self.local = local
        super().__init__(
            f"the journal in the store ({stored}) and the staging copy ({local}) disagree: "
            f"{detail}. Nothing was sent. To keep the store's, remove the staging folder "
            f"{local.parent}; to keep the staging copy's, remove the store's journal ({stored}) "
            "or write to another prefix"
        )

    @property
    def reason(self) -> str:
        return "JOURNALS_DISAGREE"


def _tasks(data: bytes) -> dict[str, set[str]]:
    """The task ids each job has in the journal lines ``data`` (lines not read are left out)."""
    tasks: dict[str, set[str]] = {}
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            continue
        try:
            record = decode_record(raw)
        except ValueError:
            continue
        if isinstance(record, AssetRecord):
            continue
        known = tasks.setdefault(record.id, set())  # an intent alone makes the job known
        if isinstance(record, SubmittedRecord | SucceededRecord | FailedRecord) and record.task_id:
            known.add(record.task_id)
    return tasks


def _disagreement(stored: bytes, local: bytes) -> str | None:
    """Why the staging copy ``local`` cannot be of the same run as the store's ``stored`` lines,
    or None. Every intent is in the store before its POST is sent, so each task the staging copy
    knows is of a job the store's journal knows too, unless the two are of different runs."""
    if not stored or not local or local.startswith(stored) or stored.startswith(local):
        return None
    in_store = _tasks(stored)
    for job_id, tasks in _tasks(local).items():
        if not tasks:
            continue
        if job_id not in in_store:
            return f"job {job_id!r} has task {min(tasks)} here and is unknown there"
        if in_store[job_id] and not tasks & in_store[job_id]:
            return (
                f"job {job_id!r} has task {min(tasks)} here and task {min(in_store[job_id])} there"
            )
    return None


class JournalMirror:
    """The segments of the journal at ``journal_path`` under ``key_prefix`` in ``output``."""

    def __init__(self, output: ObjectOutput, key_prefix: str, journal_path: Path) -> None:
        self.output = output
        self.key_prefix = key_prefix.strip("/")
        self.journal_path = journal_path
        self.segments_written = 0
        """Segments this mirror has written (compaction's included)."""
        self._next_seq = 0
        self._durable = 0  # bytes of the local file known to be in segments
        self._lock = anyio.Lock()
        self._pulled = False

    def __repr__(self) -> str:
        return f"<JournalMirror {self.output.key_url(self.key_prefix)}/>"

    # --- reading -------------------------------------------------------------------------------

    async def _segments(self) -> list[tuple[int, str]]:
        keys = await self.output.list_keys(self.key_prefix + "/")
        found = []
        for key in keys:
            match = _SEGMENT.fullmatch(key.rpartition("/")[2])
            if match is not None and key.rpartition("/")[0] == self.key_prefix:
                found.append((int(match.group(1)), key))
        return sorted(found)

    async def pull(self) -> None:
        """Make the local journal file the segments' lines, then the local lines none holds."""
        segments = await self._segments()

        async def read(item: tuple[int, str]) -> bytes:
            data = await self.output.get_bytes(item[1])
            if data is None:
                raise StorageError(
                    f"the journal segment {self.output.key_url(item[1])} vanished while read: "
                    "is another run compacting this journal?",
                    reason="STORAGE_CONFLICT",
                    url=self.output.url,
                )
            return data

        stored = b""
        for data in await map_limited(read, segments, _READ_AT_ONCE) if segments else []:
            # A compacted segment repeats everything before it: it replaces, not extends.
            stored = data if data.startswith(stored) else stored + data
        local = await anyio.to_thread.run_sync(self._local_tail, stored)
        self._next_seq = segments[-1][0] + 1 if segments else 0
        self._durable = len(stored)
        self._pulled = True
        if local is None:
            return  # the local file is the stored lines already

        def write() -> None:
            with local_io("creating the staging folder", self.journal_path.parent):
                self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.journal_path, [stored, *local])

        await anyio.to_thread.run_sync(write)

    def _local_tail(self, stored: bytes) -> list[bytes] | None:
        """The whole local lines no segment holds, or None if the local file equals ``stored``;
        :class:`JournalsDisagreeError` if the two are of different runs."""
        try:
            local = self.journal_path.read_bytes()
        except FileNotFoundError:
            local = b""
        except OSError as exc:
            raise LocalIOError.from_os_error(exc, "reading the journal") from exc
        if local == stored:
            return None
        if (detail := _disagreement(stored, local)) is not None:
            where = self.output.key_url(self.key_prefix) + "/"
            raise JournalsDisagreeError(where, self.journal_path, detail)
        known = set(stored.splitlines(keepends=True))
        return [
            line
            for line in local.splitlines(keepends=True)
            if line.endswith(b"\n") and line not in known
        ]

    # --- writing -------------------------------------------------------------------------------

    def _size(self) -> int:
        try:
            return os.stat(self.journal_path).st_size
        except FileNotFoundError:
            return 0

    async def durable(self) -> None:
        """Return once every line written to the local journal before this call is in a segment.

        Callers arriving while a segment is written wait for the next, which carries the lines
        of them all.
        """
        target = self._size()
        while self._durable < target:
            async with self._lock:
                if self._durable < target:
                    await self._flush()

    async def _flush(self) -> None:
        if not self._pulled:
            raise RuntimeError("JournalMirror.pull() must come first")
        # Read up to the file's size now: the journal appends whole lines between awaits.
        end = self._size()
        if end <= self._durable:
            return
        with (
            local_io("reading the journal", self.journal_path),
            self.journal_path.open("rb") as handle,
        ):
            handle.seek(self._durable)
            data = handle.read(end - self._durable)
        # Once sent, a segment is seen through and counted: a flush cancelled while its PUT is
        # in flight (the run's periodic flush is, as the run ends) left the store holding it
        # and this mirror not knowing, so the closing flush wrote the same key again: a false
        # STORAGE_CONFLICT ("another run writes this output's journal") on a sound run.
        with anyio.CancelScope(shield=True):
            key = segment_key(self.key_prefix, self._next_seq)
            await self.output.put_bytes(key, data, create=True)
            self._next_seq += 1
            self.segments_written += 1
            self._durable = end

    async def flush(self) -> None:
        """Put every line written so far into a segment (none if there is nothing new)."""
        async with self._lock:
            await self._flush()

    async def keep_flushing(self, every: float = JOURNAL_FLUSH_SECONDS) -> None:
        """Flush every ``every`` seconds until cancelled (a failure is raised)."""
        while True:
            await anyio.sleep(every)
            await self.flush()

    async def close(self) -> None:
        """The last lines up, then one segment holding everything; the older ones deleted."""
        async with self._lock:
            await self._flush()
            older = await self._segments()
            if len(older) <= 1:
                return
            with local_io("reading the journal", self.journal_path):
                everything = self.journal_path.read_bytes()
            key = segment_key(self.key_prefix, self._next_seq)
            await self.output.put_bytes(key, everything, create=True)
            self._next_seq += 1
            self.segments_written += 1
            await self.output.delete([k for _, k in older])
