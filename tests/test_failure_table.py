"""The README's failure table is the policy's: each row's errors mean what the row says, each
exit status is what a command exits with, and the README holds the table as rendered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from novita_async import (
    AuthenticationError,
    BudgetReachedError,
    ConfigurationError,
    ExitStatus,
    LocalIOError,
    RunStoppedError,
    TaskFailedError,
    ValidationError,
)
from novita_async._failures import (
    EXITS,
    TABLE,
    Kind,
    Row,
    classify,
    exit_status,
    markdown,
    run_exit_status,
)

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = "python -m novita_async._failures --markdown"


def _stopped(cause: BaseException) -> RunStoppedError:
    return RunStoppedError(cause, what="stopped", fix="fix it", tasks_submitted=1)


def _run_exit(kind: Kind, error: BaseException) -> ExitStatus:
    """The status a run exits with when ``error`` is met (and, if transient, ridden out)."""
    if kind is Kind.RUN:
        return exit_status(_stopped(error))
    failed = 0 if kind is Kind.TRANSIENT else 1
    return run_exit_status(failed=failed, not_finished=0, stopped=None, interrupted=False)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.what)
def test_each_rows_errors_classify_to_its_kind_and_exit_status(row: Row) -> None:
    assert row.errors
    for error in row.errors:
        assert classify(error, step=row.step).kind is row.kind
        assert _run_exit(row.kind, error) is row.exit


def test_every_kind_and_every_exit_status_has_a_row() -> None:
    assert {row.kind for row in TABLE} == set(Kind)
    assert [status for status, _, _ in EXITS] == list(ExitStatus)
    assert set(ExitStatus) - {row.exit for row in TABLE} == {
        ExitStatus.USAGE,
        ExitStatus.INTERRUPTED,
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
        (ValidationError("steps", 0, "1 to 100"), ExitStatus.USAGE),
        (ConfigurationError("no API key"), ExitStatus.USAGE),
        (_stopped(AuthenticationError(401, reason="INVALID_API_KEY")), ExitStatus.STOPPED),
        (_stopped(BudgetReachedError(3)), ExitStatus.BUDGET),
        (LocalIOError("full", errno=28), ExitStatus.STOPPED),
        (OSError(28, "No space left on device"), ExitStatus.STOPPED),  # this disk: the run's
        (ConnectionResetError(104, "reset"), ExitStatus.FAILED),  # the network's
        (TimeoutError(), ExitStatus.FAILED),
        (TaskFailedError("t", "boom"), ExitStatus.FAILED),
        (RuntimeError("bug"), ExitStatus.FAILED),
    ],
    ids=repr,
)
def test_exit_status_of_a_command_ended_by_an_error(
    error: BaseException, status: ExitStatus
) -> None:
    assert exit_status(error) is status


def test_a_damaged_journal_is_a_usage_error() -> None:
    from novita_async.batch import JournalDamagedError

    assert exit_status(JournalDamagedError(Path("out/journal.jsonl"), [3])) is ExitStatus.USAGE


def test_an_aiohttp_os_error_is_the_networks() -> None:
    import aiohttp

    error = aiohttp.ClientOSError(2, "gone")  # errno 2 would be a missing file to the disk
    assert exit_status(error) is ExitStatus.FAILED


@pytest.mark.parametrize(
    ("failed", "not_finished", "stopped", "interrupted", "status"),
    [
        (0, 0, None, False, ExitStatus.OK),
        (1, 0, None, False, ExitStatus.FAILED),
        (0, 1, None, False, ExitStatus.FAILED),
        (0, 0, None, True, ExitStatus.INTERRUPTED),
        (2, 1, None, True, ExitStatus.INTERRUPTED),
        (1, 0, _stopped(BudgetReachedError(3)), True, ExitStatus.BUDGET),
        (0, 0, _stopped(AuthenticationError(401)), False, ExitStatus.STOPPED),
    ],
)
def test_run_exit_status(
    failed: int,
    not_finished: int,
    stopped: RunStoppedError | None,
    interrupted: bool,
    status: ExitStatus,
) -> None:
    got = run_exit_status(
        failed=failed, not_finished=not_finished, stopped=stopped, interrupted=interrupted
    )
    assert got is status


def test_the_readme_holds_the_rendered_table() -> None:
    block = markdown()
    assert block.startswith("<!-- failure-table:start -->")
    assert block.rstrip().endswith("<!-- failure-table:end -->")
    assert block in README.read_text(encoding="utf-8"), (
        f"README.md's failure table is not the policy's: run `{REGENERATE}` and paste its output "
        "over the block between <!-- failure-table:start --> and <!-- failure-table:end -->"
    )


def test_the_table_says_what_the_backoff_rows_do() -> None:
    block = markdown()
    assert "1 s doubling to 60 s" in block  # RATE_LIMITED
    assert "1 s doubling to 30 s" in block  # OUTAGE
    assert "0.5 s doubling to 8 s" in block  # the call's default


def test_the_module_renders_the_table_from_the_command_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore::RuntimeWarning",
            "-m",
            "novita_async._failures",
            "--markdown",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == markdown()
