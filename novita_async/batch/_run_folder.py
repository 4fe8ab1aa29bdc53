"""The run's folder: what a run keeps beyond itself, opened on the way in, closed on the way out.

OUT is a local folder, or for an object-store OUT (``s3://BUCKET/PREFIX``...) a local staging
folder the run works in (see ``_destination``). Its state (journal, ``results.jsonl``, lock) lives
in OUT itself, or for a shard in ``OUT/.novita-shards/<k>-of-<K>/`` (see ``_shards``); the images
always go to OUT. An object-store OUT keeps its journal in the store too, as segments
(``_journal_segments``), so that a run restarted on another machine resumes from it.

Opening: the layout check, the lock (one run per folder), the store's segments pulled into the
local journal, the journal opened, the outputs of the jobs it calls succeeded checked against OUT
or the store (``_verify``: a missing image makes its job ``OUTPUT_MISSING``, fetched again), stale
temporary files removed, ``results.jsonl`` rebuilt.
Closing (shielded: a cancelled run closes too): the results merged and closed, the journal closed,
then for an object-store OUT its last segment (compacted) and ``results.jsonl`` uploaded; the
store failing there is kept as :attr:`RunFolder.end_error`, which stops the run like anywhere else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from .._atomic import local_io, remove_stale_temp_files
from .._exceptions import ConfigurationError, LocalIOError, StorageError
from ._destination import Destination, LocalOutput, looks_like_url, parse_out
from ._journal import JOURNAL_NAME, Journal
from ._journal_segments import JOURNAL_KEY, JournalMirror
from ._options import BatchOptions
from ._outputs import OutputLock
from ._results import RESULTS_NAME, ResultsFile
from ._shards import check_layout, check_stored_layout
from ._verify import check_outputs

__all__ = ["RunFolder"]


class RunFolder:
    """OUT as one run sees it: where its images, journal, results and lock are."""

    def __init__(self, out: str | os.PathLike[str] | Destination, options: BatchOptions) -> None:
        self.options = options
        self.destination = parse_out(out, staging_dir=options.staging_dir)
        # An object-store OUT: the run works in its local staging folder and uploads from there.
        self.out_dir = self.destination.local_dir
        if (scheme := looks_like_url(str(options.journal_path or ""))) is not None:
            raise ConfigurationError(
                f"journal_path is a {scheme!r} URL: give the output as that URL instead, and the "
                "journal is kept in the store beside the images"
            )
        shard = options.shard
        # A shard's journal, results and lock are its own; its images go to OUT with the others.
        self.state_dir = self.out_dir if shard is None else shard.folder(self.out_dir)
        self.journal_path = options.journal_path or self.state_dir / JOURNAL_NAME
        self.mirror = self._journal_mirror()
        self.end_error: StorageError | None = None
        """The store's failure while closing (the last segment, results.jsonl), if any."""

    def _journal_mirror(self) -> JournalMirror | None:
        """An object-store OUT keeps its journal in the store too (as segments), so that a run
        restarted on another machine resumes; its key is the journal's place in staging."""
        if isinstance(self.destination, LocalOutput):
            return None
        try:
            key = self.journal_path.relative_to(self.out_dir).with_suffix("").as_posix()
        except ValueError:
            key = JOURNAL_KEY
        return JournalMirror(self.destination, key, self.journal_path)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[tuple[Journal, ResultsFile]]:
        """The journal (locked) and the results file, rebuilt on the way in and on the way out."""
        self.end_error = None
        results = ResultsFile(self.state_dir / RESULTS_NAME)
        lock = OutputLock(self.state_dir)

        def open_journal() -> Journal:
            # Before a shard's folder is made: that folder says how OUT is sharded.
            check_layout(self.out_dir, self.options.shard)
            with local_io("creating the output folder", self.state_dir):
                self.state_dir.mkdir(parents=True, exist_ok=True)
            # The folder's lock first: a second run on this OUT is refused whatever its journal.
            lock.acquire()
            try:
                if self.mirror is not None:  # the store's segments make the local journal
                    anyio.from_thread.run(self.mirror.pull)
                return Journal(self.journal_path, fsync=self.options.journal_fsync)
            except BaseException:
                lock.release()
                raise

        # The store's keys say how an object-store OUT is sharded (staging may be new here).
        await check_stored_layout(self.destination, self.options.shard)
        # Shielded: a cancellation must not lose a journal opened (and locked) in the thread.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LocalIOError.from_os_error(
                    exc, "creating the output folder", str(self.out_dir)
                ) from exc
            journal = await anyio.to_thread.run_sync(open_journal)
        try:
            await check_outputs(self.destination, self.out_dir, journal)

            def prepare() -> None:
                # A run killed mid-download (kill -9) left partial files: those whose writer
                # process no longer exists are removed.
                remove_stale_temp_files(self.out_dir)
                results.rebuild(list(journal.ended_outcomes()))

            await anyio.to_thread.run_sync(prepare)
            yield journal, results
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close, journal, results)
                    await self._publish_end(results.path)
            finally:
                lock.release()

    async def _publish_end(self, results: Path) -> None:
        """An object-store OUT: the journal's last segment (then compacted), and results.jsonl."""
        if self.mirror is None:
            return
        try:
            await self.mirror.close()
            key = results.relative_to(self.out_dir).as_posix()
            await self.destination.publish_file(results, key)
        except StorageError as exc:
            self.end_error = exc


def _close(journal: Journal, results: ResultsFile) -> None:
    try:
        results.merge(journal.ended_outcomes(), journal.jobs)
    finally:
        results.close()
        journal.close()
