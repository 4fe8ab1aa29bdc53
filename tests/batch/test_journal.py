"""The journal and results file: durable lines, torn tails, state per job, rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from novita_async import ConfigurationError
from novita_async.batch import JobError, JobOutcome
from novita_async.batch._journal import Journal, read_records
from novita_async.batch._results import ResultsFile


def _ok(job_id: str, task_id: str = "t") -> JobOutcome:
    return JobOutcome(job_id, "succeeded", task_id=task_id, seed=7, files=[f"{job_id}_0.png"])


def _failed(job_id: str, reason: str = "TASK_FAILED", task_id: str | None = "t") -> JobOutcome:
    return JobOutcome(job_id, "failed", task_id=task_id, error=JobError("E", reason, "boom"))


def test_states_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.record_asset("abc", "asset-1")
        journal.record_submitted("a", "task-a", "fp-a")
        journal.record_submitted("b", "task-b", "fp-b")
        journal.record_outcome(_ok("b", "task-b"), "fp-b")
        journal.record_outcome(_failed("c", "INPUT_NOT_FOUND", None), "fp-c")
    with Journal(path) as journal:
        assert journal.assets == {"abc": "asset-1"}
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
    assert [r["type"] for r in read_records(path)] == ["submitted", "succeeded"]


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('not json\n[1, 2]\n{"no": "type"}\n{"type": "submitted", "id": "a"}\n')
    with Journal(path) as journal:
        assert journal.jobs["a"].phase == "submitted"
        assert journal.jobs["a"].task_id is None


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


def test_a_journal_of_the_older_format_loads_with_its_fingerprints(tmp_path: Path) -> None:
    # Before the fingerprint moved into "submitted", a "validated" record carried it.
    path = tmp_path / "j.jsonl"
    lines = [
        {"type": "validated", "id": "a", "fingerprint": "fp-a", "t": 1.0},
        {"type": "submitted", "id": "a", "task_id": "task-a", "t": 2.0},
        {"type": "validated", "id": "b", "fingerprint": "fp-b", "t": 3.0},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Journal(path) as journal:
        a, b = journal.jobs["a"], journal.jobs["b"]
        assert (a.phase, a.task_id, a.fingerprint) == ("submitted", "task-a", "fp-a")
        assert (b.phase, b.task_id) == ("validated", None)


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
    row = _failed("x", "TASK_FAILED").to_result_line()
    assert row["error"] == {"type": "E", "reason": "TASK_FAILED", "message": "boom"}
    assert row["files"] == [] and row["seed"] is None
