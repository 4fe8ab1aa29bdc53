"""How the command reports the end of a run and its errors: the summary's advice per kind of job
left undone, the exit statuses, and errors out of exception groups."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io

import pytest

from novita_async import (
    AuthenticationError,
    LocalIOError,
    RunStoppedError,
    ServerError,
    ValidationError,
)
from novita_async._cli import _run, main
from novita_async._cli._display import format_summary
from novita_async._cli._run import RunEnd, real_error
from novita_async._cli._settings import RunSettings
from novita_async.batch import BatchSummary


def summary(**fields: object) -> BatchSummary:
    return BatchSummary(**{"jobs": 10, "wall_seconds": 2.0, **fields})  # type: ignore[arg-type]


def test_first_line_is_unchanged_and_a_clean_run_says_no_more() -> None:
    clean = summary(succeeded=10, images=10, tasks=10, http_requests={"submit": 10, "result": 10})
    assert format_summary(clean) == (
        "10 jobs: 10 succeeded, 0 failed; 10 images in 2.0s (300/min), 2.0 requests per task"
    )
    assert RunEnd(clean).status == 0


def test_each_kind_of_job_left_undone_says_what_it_means_and_what_acts_on_it() -> None:
    reasons = {"SUBMIT_OUTCOME_UNKNOWN": 2, "RETRIES_EXHAUSTED": 3, "TASK_NOT_FOUND": 1,
               "TASK_FAILED": 2, "IMAGE_NO_FACE_DETECTED": 1, "INVALID_JOB_LINE": 1}  # fmt: skip
    ended = summary(succeeded=0, failed=10, failures_by_reason=reasons, not_finished=5,
                    stopped="OUTAGE", interrupted=True)  # fmt: skip
    first, *rest = format_summary(ended).splitlines()
    assert first.startswith("10 jobs: 0 succeeded, 10 failed (IMAGE_NO_FACE_DETECTED: 1, ")
    assert rest == [
        "  2 SUBMIT_OUTCOME_UNKNOWN (a task may exist and be billed; look before paying again: "
        "rerun with --retry-unknown-submits to submit them anyway)",
        "  3 RETRIES_EXHAUSTED (the service kept failing for them; rerun the same command to try "
        "again)",
        "  1 TASK_NOT_FOUND (the service no longer knows their tasks; rerun with --retry-failed "
        "to submit them afresh)",
        "  1 INVALID_JOB_LINE (lines of the job file that are not valid jobs, named above; fix "
        "them and rerun with --retry-failed)",
        "  3 jobs failed for their own reason (IMAGE_NO_FACE_DETECTED: 1, TASK_FAILED: 2; each "
        "job's error is in results.jsonl; rerun with --retry-failed to run them again)",
        "  5 not finished (the run stopped; rerun to continue)",
    ]


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (RunEnd(summary(succeeded=9, failed=1, failures_by_reason={"TASK_FAILED": 1})), 1),
        (RunEnd(summary(succeeded=10, not_finished=2, interrupted=True)), 1),  # --fail-fast
        (RunEnd(summary(succeeded=4, not_finished=6), interrupted=True), 130),
        (RunEnd(summary(), interrupted=True, stopped=RunStoppedError(
            AuthenticationError(401), what="w", fix="f", tasks_submitted=0)), 3),
    ],
)  # fmt: skip
def test_exit_statuses(end: RunEnd, status: int) -> None:
    assert end.status == status


def test_the_most_telling_leaf_of_nested_groups_is_the_error_reported() -> None:
    disk_full = LocalIOError("writing an image failed: No space left on device (out/a_0.png)",
                             errno=errno.ENOSPC, path="out/a_0.png")  # fmt: skip
    group = BaseExceptionGroup("unhandled errors in a TaskGroup", [
        asyncio.CancelledError(),
        ExceptionGroup("unhandled errors in a TaskGroup", [ServerError(503), disk_full]),
    ])  # fmt: skip
    assert real_error(group) is disk_full
    assert real_error(ExceptionGroup("one", [ExceptionGroup("two", [disk_full])])) is disk_full
    assert real_error(disk_full) is disk_full
    bad = ValidationError("width", 9000, "must be in [128, 2048]")
    assert real_error(ExceptionGroup("g", [ServerError(500), bad])) is bad


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (
            ExceptionGroup("unhandled errors in a TaskGroup", [
                LocalIOError("writing an image failed: No space left on device (o/a_0.png)",
                             errno=errno.ENOSPC),
                LocalIOError("writing an image failed: No space left on device (o/b_0.png)",
                             errno=errno.ENOSPC),
            ]),
            3,
            "DISK_FULL: writing an image failed: No space left on device (o/a_0.png)",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "o/index.html"),
            3,
            "READ_ONLY_FILE_SYSTEM: a file operation failed: Read-only file system (o/index.html)",
        ),
        (
            RunStoppedError(AuthenticationError(401, reason="MISSING_API_KEY"),
                            what="the service refused the API key", fix="check NOVITA_API_KEY",
                            tasks_submitted=1),
            3,
            "run stopped: the service refused the API key (401 MISSING_API_KEY): "
            "check NOVITA_API_KEY; 1 task submitted; rerun to continue",
        ),
        (ExceptionGroup("g", [ExceptionGroup("g", [ServerError(503)])]), 1, "ServerError: 503"),
    ],
)  # fmt: skip
def test_errors_are_one_line_out_of_any_exception_group(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, status: int, line: str
) -> None:
    async def failing(settings: RunSettings) -> int:
        raise raised

    monkeypatch.setattr(_run, "run", failing)
    code, _, err = run_main(["run", "jobs.jsonl", "--out", "o"])
    assert code == status
    assert err == f"novita-async: error: {line}\n"
    assert "ExceptionGroup" not in err and "unexpected" not in err
