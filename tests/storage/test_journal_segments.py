"""The journal kept in an object store as segments: pull, group commit, compaction, one writer."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from novita_async import StorageError
from novita_async.batch import open_output
from novita_async.batch._journal import (
    Journal,
    JournalMirror,
    JournalsDisagreeError,
    SubmittedRecord,
    SubmittingRecord,
    encode_record,
    segment_key,
)
from novita_async.batch._outputs import ObjectOutput


def memory_output(tmp_path: Path) -> ObjectOutput:
    out = open_output("memory://bucket/run", staging_dir=tmp_path / "staging")
    assert isinstance(out, ObjectOutput)
    return out


def line(job_id: str) -> bytes:
    return encode_record(SubmittingRecord(id=job_id, fingerprint="f-" + job_id, t=1.0))


async def stored_segments(out: ObjectOutput) -> dict[str, bytes]:
    keys = await out.list_keys(".novita-journal/")
    return {key: await out.get_bytes(key) or b"" for key in sorted(keys)}


async def test_a_fresh_machine_resumes_from_the_segments_alone(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    first = JournalMirror(out, ".novita-journal", tmp_path / "a" / "journal.jsonl")
    await first.pull()
    with Journal(first.journal_path) as journal:
        journal.record_submitting("job-1", "f1")
        await first.durable()
        journal.record_submitted("job-1", "task-1", "f1")
        await first.flush()
        journal.record_submitting("job-2", "f2")
        await first.durable()
    assert first.segments_written == 3
    await first.close()  # compacted: one segment holds everything
    segments = await stored_segments(out)
    assert list(segments) == [segment_key(".novita-journal", 3)]
    assert segments[segment_key(".novita-journal", 3)] == first.journal_path.read_bytes()

    second = JournalMirror(out, ".novita-journal", tmp_path / "b" / "journal.jsonl")
    await second.pull()
    assert second.journal_path.read_bytes() == first.journal_path.read_bytes()
    with Journal(second.journal_path) as journal:
        assert journal.jobs["job-1"].task_id == "task-1"
        assert journal.jobs["job-2"].phase == "submitting"


async def test_local_lines_no_segment_holds_are_kept_and_go_up_next(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    path = tmp_path / "journal.jsonl"
    await out.put_bytes(segment_key(".novita-journal", 0), line("a") + line("b"), create=True)
    # The same machine crashed after writing "c" and before its segment went up (and tore "d").
    path.write_bytes(line("a") + line("b") + line("c") + line("d")[:-5])
    mirror = JournalMirror(out, ".novita-journal", path)
    await mirror.pull()
    assert path.read_bytes() == line("a") + line("b") + line("c")
    await mirror.durable()
    segments = await stored_segments(out)
    assert segments[segment_key(".novita-journal", 1)] == line("c")


async def test_a_crash_between_compaction_and_deletion_doubles_nothing(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    key = ".novita-journal"
    await out.put_bytes(segment_key(key, 0), line("a"), create=True)
    await out.put_bytes(segment_key(key, 1), line("b"), create=True)
    await out.put_bytes(segment_key(key, 2), line("a") + line("b"), create=True)  # compacted
    await out.put_bytes(segment_key(key, 3), line("c"), create=True)
    mirror = JournalMirror(out, key, tmp_path / "journal.jsonl")
    await mirror.pull()
    assert mirror.journal_path.read_bytes() == line("a") + line("b") + line("c")


async def test_concurrent_callers_share_segments(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    mirror = JournalMirror(out, ".novita-journal", tmp_path / "journal.jsonl")
    await mirror.pull()
    durable_before_return: list[bool] = []
    with Journal(mirror.journal_path) as journal:

        async def submit(n: int) -> None:
            journal.record_submitting(f"job-{n}", None)
            await mirror.durable()
            stored = b"".join((await stored_segments(out)).values())
            durable_before_return.append(f'"id":"job-{n}"'.encode() in stored)

        async with anyio.create_task_group() as group:
            for n in range(50):
                group.start_soon(submit, n)
    assert durable_before_return == [True] * 50
    # At most the first caller's segment, then one for all who came while it was written.
    assert 1 <= mirror.segments_written <= 2


async def test_a_second_writer_fails_loudly(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    one = JournalMirror(out, ".novita-journal", tmp_path / "one.jsonl")
    two = JournalMirror(out, ".novita-journal", tmp_path / "two.jsonl")
    await one.pull()
    await two.pull()
    one.journal_path.write_bytes(line("a"))
    two.journal_path.write_bytes(line("b"))
    await one.durable()
    with pytest.raises(StorageError) as conflict:
        await two.durable()
    assert conflict.value.reason == "STORAGE_CONFLICT"
    assert (await stored_segments(out)) == {segment_key(".novita-journal", 0): line("a")}


def submitted(job_id: str, task_id: str) -> bytes:
    return encode_record(SubmittedRecord(id=job_id, task_id=task_id, t=2.0))


async def test_a_wiped_store_gets_the_staging_copy_back(tmp_path: Path) -> None:
    out = memory_output(tmp_path)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(line("a") + submitted("a", "task-a"))  # the store's segments are gone
    mirror = JournalMirror(out, ".novita-journal", path)
    await mirror.pull()
    assert path.read_bytes() == line("a") + submitted("a", "task-a")
    await mirror.durable()
    segments = await stored_segments(out)
    assert segments == {segment_key(".novita-journal", 0): path.read_bytes()}


@pytest.mark.parametrize(
    ("stored", "detail"),
    [
        (line("b") + submitted("b", "task-b"), "job 'a' has task task-a here and is unknown there"),
        (
            line("a") + submitted("a", "task-z"),
            "job 'a' has task task-a here and task task-z there",
        ),
    ],
)
async def test_a_store_journal_of_another_run_is_refused_naming_both(
    tmp_path: Path, stored: bytes, detail: str
) -> None:
    out = memory_output(tmp_path)
    await out.put_bytes(segment_key(".novita-journal", 0), stored, create=True)
    path = tmp_path / "staging-copy" / "journal.jsonl"
    path.parent.mkdir()
    path.write_bytes(line("a") + submitted("a", "task-a"))
    with pytest.raises(JournalsDisagreeError) as refused:
        await JournalMirror(out, ".novita-journal", path).pull()
    message = str(refused.value)
    assert detail in message
    assert "memory://bucket/run/.novita-journal/" in message and str(path) in message
    assert path.read_bytes() == line("a") + submitted("a", "task-a")  # nothing rewritten


async def test_an_answer_the_store_missed_is_no_disagreement(tmp_path: Path) -> None:
    # The intent went up before its POST; the answer did not (the machine was lost), and
    # another machine went on meanwhile: the same run, told in two parts.
    out = memory_output(tmp_path)
    await out.put_bytes(segment_key(".novita-journal", 0), line("a") + line("b"), create=True)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(line("a") + submitted("a", "task-a"))
    mirror = JournalMirror(out, ".novita-journal", path)
    await mirror.pull()
    assert path.read_bytes() == line("a") + line("b") + submitted("a", "task-a")


class AnsweringLate(ObjectOutput):
    """A store that applies a PUT at once but whose answer comes only when the test lets it:
    the window in which the run's end cancels its periodic flush."""

    def __init__(self, inner: ObjectOutput) -> None:
        super().__init__(inner.url, inner.staging, inner._store, inner._prefix)
        self.landed = anyio.Event()
        self.answer = anyio.Event()

    async def put_bytes(self, key: str, data: bytes, *, create: bool = False) -> None:
        await super().put_bytes(key, data, create=create)
        self.landed.set()
        await self.answer.wait()


async def test_a_flush_cancelled_while_its_segment_is_written_still_counts_it(
    tmp_path: Path,
) -> None:
    out = AnsweringLate(memory_output(tmp_path))
    mirror = JournalMirror(out, ".novita-journal", tmp_path / "journal.jsonl")
    await mirror.pull()
    mirror.journal_path.write_bytes(line("a"))
    async with anyio.create_task_group() as run:
        run.start_soon(mirror.flush)
        await out.landed.wait()  # the store holds segment 0; its answer is on the way
        run.cancel_scope.cancel()  # the run ends, cancelling its periodic flush
        out.answer.set()
    with mirror.journal_path.open("ab") as journal:
        journal.write(line("b"))
    await mirror.close()  # was: STORAGE_CONFLICT, segment 0 written again
    fresh = JournalMirror(out, ".novita-journal", tmp_path / "fresh.jsonl")
    await fresh.pull()
    assert fresh.journal_path.read_bytes() == line("a") + line("b")
