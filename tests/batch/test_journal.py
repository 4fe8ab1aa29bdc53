"""The journal and results file: durable lines, torn tails, state per job, rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import SmallFileSystem

from novita_async import ConfigurationError
from novita_async.batch import (
    JobError,
    JobOutcome,
    JobStatus,
    JournalDamagedError,
    repair_journal,
)
from novita_async.batch._journal import (
    JOURNAL_NAME,
    RESERVE_BYTES,
    JobPhase,
    Journal,
    ResultLine,
    ResultsFile,
    fold,
    scan_journal,
)


def _ok(job_id: str, task_id: str = "t") -> JobOutcome:
    return JobOutcome(job_id, "succeeded", task_id=task_id, seed=7, files=[f"{job_id}_0.png"])


def _failed(job_id: str, reason: str = "TASK_FAILED", task_id: str | None = "t") -> JobOutcome:
    return JobOutcome(job_id, "failed", task_id=task_id, error=JobError("E", reason, "boom"))


def test_states_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_asset(("http://assets/image", "abc"), "asset-1")
        journal.record_submitted("a", "task-a", "fp-a")
        journal.record_submitted("b", "task-b", "fp-b")
        journal.record_outcome(_ok("b", "task-b"), "fp-b")
        journal.record_outcome(_failed("c", "INPUT_NOT_FOUND", None), "fp-c")
    with Journal(path) as journal:
        assert journal.assets == {("http://assets/image", "abc"): "asset-1"}
        a, b, c = journal.jobs["a"], journal.jobs["b"], journal.jobs["c"]
        assert (a.phase, a.task_id, a.fingerprint) == ("submitted", "task-a", "fp-a")
        assert (b.phase, b.seed, b.files, b.fingerprint) == ("succeeded", 7, ("b_0.png",), "fp-b")
        assert c.phase == "failed" and c.error is not None and c.error.reason == "INPUT_NOT_FOUND"
        assert [o.job_id for o in journal.ended_outcomes()] == ["b", "c"]
        assert all(o.replayed for o in journal.ended_outcomes())


def test_every_line_is_complete_json_and_holds_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_submitted("a", "task", "fp")
        journal.record_outcome(_ok("a", "task"), "fp")
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    kinds = [json.loads(line)["type"] for line in raw.splitlines()]
    assert kinds == ["submitted", "succeeded"]


@pytest.mark.parametrize("cut", [1, 5, 17])
def test_a_torn_last_line_is_ignored_and_cut_before_appending(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_submitted("a", "task-a", "fp")
        journal.record_outcome(_ok("a", "task-a"), "fp")
    whole = path.read_bytes()
    path.write_bytes(whole[:-cut])  # kill -9 in the middle of the last write
    with Journal(path) as journal:
        assert journal.jobs["a"].phase == "submitted"
        journal.record_outcome(_ok("a", "task-a"), "fp")
    with Journal(path) as journal:
        assert journal.jobs["a"].phase == "succeeded"
    assert [r.type for r in scan_journal(path).records] == ["submitted", "succeeded"]


@pytest.mark.parametrize("damage", [b"not json", b"\x00" * 40, b"[1, 2]", b'{"no": "type"}'])
def test_a_damaged_line_before_the_last_refuses_the_run_naming_it(
    tmp_path: Path, damage: bytes
) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_submitting("a", "fp")
        journal.record_submitted("a", "task-a", "fp")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + damage + b"\n" + lines[1])
    with pytest.raises(JournalDamagedError, match="line 2 cannot be read") as refused:
        Journal(path)
    assert refused.value.lines == (2,)
    assert "novita-async journal repair" in str(refused.value)


def test_a_record_whose_checksum_fails_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_submitted("a", "task-a", "fp")
        journal.record_submitted("b", "task-b", "fp")
    path.write_bytes(path.read_bytes().replace(b"task-a", b"task-z"))  # a flipped byte
    with pytest.raises(JournalDamagedError) as refused:
        Journal(path)
    assert refused.value.lines == (1,)


def test_repair_keeps_good_records_and_marks_jobs_whose_records_were_lost_unknown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_submitting("paid", "fp")  # its "submitted" record will be lost...
        journal.record_submitted("paid", "task-p", "fp")
        journal.record_submitting("sent", "fp")  # ...and this intent
        journal.record_submitted("safe", "task-s", "fp")
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"task-p", b"task-?")  # checksum fails; the id is readable
    lines[2] = b"\x00" * (len(lines[2]) - 1) + b"\n"  # zeroes: no id left to read
    path.write_bytes(b"".join(lines))

    report = repair_journal(path)
    assert (report.kept, report.damaged_lines) == (2, (2, 3))
    assert report.marked_unknown == ("paid",)
    assert report.unattributed_lines == (3,)
    assert report.backup is not None and report.backup.read_bytes() == b"".join(lines)
    with Journal(path) as journal:
        paid = journal.jobs["paid"]
        assert paid.phase is JobPhase.FAILED and paid.error is not None
        assert paid.error.reason == "SUBMIT_OUTCOME_UNKNOWN"
        assert journal.jobs["safe"].task_id == "task-s"
    assert repair_journal(path).damaged_lines == ()  # nothing left to repair


def test_a_journal_in_use_is_not_repaired(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path), pytest.raises(ConfigurationError, match="in use"):
        repair_journal(path)


def test_a_second_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path), pytest.raises(ConfigurationError, match="in use"):
        Journal(path)
    with Journal(path):  # released on close
        pass


def test_a_retried_job_moves_to_the_end_with_its_last_state(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_outcome(_failed("a"), "fp")
        journal.record_outcome(_ok("b"), "fp")
        journal.record_outcome(_ok("a", "t2"), "fp")
    with Journal(path) as journal:
        ended = list(journal.ended_outcomes())
    assert [(o.job_id, o.status) for o in ended] == [("b", "succeeded"), ("a", "succeeded")]


def test_records_of_an_unknown_kind_or_shape_are_damage(tmp_path: Path) -> None:
    # "validated" records came from an old format, no longer read; a bad field spoils its record.
    path = tmp_path / "j.jsonl"
    lines = [
        {"type": "validated", "id": "a", "fingerprint": "fp-a", "t": 1.0},
        {"type": "submitted", "id": "a", "task_id": "task-a", "t": 2.0},
        {"type": "succeeded", "id": "a", "files": {"not": "a list"}, "t": 4.0},
        {"type": "asset", "sha256": "abc", "asset_id": "", "t": 5.0},
        {"type": "submitted", "id": "b", "task_id": "task-b", "t": 6.0},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(JournalDamagedError) as refused:
        Journal(path)
    assert refused.value.lines == (1, 3, 4)


def test_records_on_disk_keep_their_keys_and_order(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_asset(("http://assets/image", "abc"), "asset-1")
        journal.record_submitted("a", "task-a", "fp")
        journal.record_outcome(_ok("a", "task-a"), "fp")
        journal.record_outcome(_failed("b", task_id=None), None)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [list(row) for row in rows] == [
        ["type", "sha256", "asset_id", "endpoint", "t", "c"],
        ["type", "id", "task_id", "fingerprint", "t", "c"],
        ["type", "id", "task_id", "fingerprint", "seed", "files", "sizes", "digests", "t", "c"],
        ["type", "id", "task_id", "fingerprint", "error", "files", "t", "c"],
    ]
    assert all(isinstance(row.pop("t"), float) for row in rows)
    # The checksum: CRC-32 of the line without it, in 8 hex digits.
    assert all(len(row.pop("c")) == 8 for row in rows)
    assert rows == [
        {"type": "asset", "sha256": "abc", "asset_id": "asset-1",
         "endpoint": "http://assets/image"},
        {"type": "submitted", "id": "a", "task_id": "task-a", "fingerprint": "fp"},
        {"type": "succeeded", "id": "a", "task_id": "task-a", "fingerprint": "fp", "seed": 7,
         "files": ["a_0.png"], "sizes": [], "digests": []},
        {"type": "failed", "id": "b", "task_id": None, "fingerprint": None,
         "error": {"type": "E", "reason": "TASK_FAILED", "message": "boom"}, "files": []},
    ]  # fmt: skip
    assert path.read_text().startswith(
        '{"type":"asset","sha256":"abc","asset_id":"asset-1","endpoint":"http://assets/image","t":'
    )


def test_phases_and_statuses_are_enums_that_read_as_their_json(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_outcome(_failed("a"), "fp")
    with Journal(path) as journal:
        state = journal.jobs["a"]
        (outcome,) = journal.ended_outcomes()
    assert state.phase is JobPhase.FAILED and state.phase == "failed"
    assert outcome.status is JobStatus.FAILED and outcome.status == "failed" and not outcome.ok


def test_a_run_keeps_in_memory_only_the_jobs_the_journal_held_when_opened(tmp_path: Path) -> None:
    # Memory must not grow with the number of jobs a run adds: their records go to disk only.
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_outcome(_failed("old"), "fp")
    with Journal(path) as journal:
        for n in range(50):
            journal.record_submitted(f"new-{n}", f"task-{n}", "fp")
            journal.record_outcome(_ok(f"new-{n}", f"task-{n}"), "fp")
        journal.record_outcome(_ok("old", "t2"), "fp")  # a known job is kept up to date
        assert list(journal.jobs) == ["old"] and journal.jobs["old"].phase == "succeeded"
    with Journal(path) as journal:
        assert len(journal.jobs) == 51  # all of it is on disk for the next run


def test_results_rebuild_replaces_appended_duplicates(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "results.jsonl")
    results.rebuild([_failed("a")])
    results.append(_ok("a", "t2"))
    results.append(_ok("b"))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "a", "b"]
    results.rebuild([_ok("b"), _ok("a", "t2")])
    results.close()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["b", "a"]
    assert rows[1] == {
        "id": "a",
        "status": "succeeded",
        "task_id": "t2",
        "seed": 7,
        "files": ["a_0.png"],
        "error": None,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temp file left


def test_failed_result_line_has_the_error_triple(tmp_path: Path) -> None:
    row = json.loads(ResultLine.of(_failed("x", "TASK_FAILED")).encode())
    assert row["error"] == {"type": "E", "reason": "TASK_FAILED", "message": "boom"}
    assert row["files"] == [] and row["seed"] is None


def test_result_lines_read_back_as_written() -> None:
    line = ResultLine.of(_ok("a"))
    assert ResultLine.decode(line.encode()) == line
    assert line.status is JobStatus.SUCCEEDED
    assert list(json.loads(line.encode())) == ["id", "status", "task_id", "seed", "files", "error"]
    for bad in (line.encode()[:-1], b"[1]\n", b'{"id": "a", "status": "maybe"}\n', b"{\n"):
        with pytest.raises(ValueError):
            ResultLine.decode(bad)


@pytest.mark.small_fs_size(4 * 1024 * 1024)
def test_a_full_disk_cannot_keep_the_record_of_a_paid_task_from_being_written(
    small_fs: SmallFileSystem,
) -> None:
    path = small_fs.path / JOURNAL_NAME
    with Journal(path) as journal:
        assert journal.reserve_path.stat().st_size == RESERVE_BYTES
        small_fs.fill()  # the disk is full now
        journal.record_submitting("a", "fp")
        journal.record_submitted("a", "task-1", "fp")
        assert journal.reserve_used
        assert not journal.reserve_path.exists()
    assert [(r.type, getattr(r, "task_id", None)) for r in scan_journal(path).records] == [
        ("submitting", None),
        ("submitted", "task-1"),
    ]
    # The next run finds the task, and puts the reserve back once there is room again.
    (small_fs.path / "filler").unlink()
    with Journal(path) as journal:
        assert journal.jobs["a"].task_id == "task-1"
        assert journal.reserve_path.stat().st_size == RESERVE_BYTES


def test_an_intent_without_an_answer_is_remembered_and_a_refusal_undoes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        journal.record_submitting("sent", "fp1")
        journal.record_submitting("refused", "fp2")
        journal.record_not_submitted("refused")
    with Journal(path) as journal:
        assert journal.jobs["sent"].phase is JobPhase.SUBMITTING
        assert journal.jobs["sent"].task_id is None
        assert "refused" not in journal.jobs  # as if never tried


def test_a_jobs_state_holds_every_task_it_had_and_a_refusal_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        journal.record_submitting("a", "fp")
        journal.record_submitted("a", "t1", "fp")
        journal.record_outcome(_failed("a", task_id="t1"), "fp")
        journal.record_submitting("a", "fp")
        journal.record_not_submitted("a")  # a retry refused: back to the failed state
    with Journal(path) as journal:
        refused = journal.jobs["a"]
        assert (refused.phase, refused.task_id, refused.tasks) == (JobPhase.FAILED, "t1", {"t1"})
        journal.record_submitting("a", "fp")
        journal.record_submitted("a", "t2", "fp")
        assert journal.jobs["a"].tasks == {"t1", "t2"} and journal.jobs["a"].task_id == "t2"
        journal.record_outcome(_ok("a", "t2"), "fp")
    assert fold(scan_journal(path).records)[1]["a"].tasks == {"t1", "t2"}
