"""The README's failure table is the policy's: each row's errors mean what the row says, each
exit status is what a command exits with, and the README holds the table as rendered here
(``python tests/test_failure_table.py`` prints it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from novita_async import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BudgetReachedError,
    ConfigurationError,
    ExitStatus,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    NotFoundError,
    OutageError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    RunStoppedError,
    ServerError,
    StorageError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    ValidationError,
)
from novita_async._failures import (
    MAX_JOB_ROUNDS,
    OUTAGE,
    RATE_LIMITED,
    Backoff,
    Kind,
    Step,
    call_backoff,
    classify,
    exit_status,
    run_exit_status,
)

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = "python tests/test_failure_table.py"


@attrs.frozen
class Row:
    """One line of the README's failure table: errors that mean the same, and what follows."""

    what: str
    errors: tuple[BaseException, ...]
    kind: Kind
    follows: str
    exit: ExitStatus
    step: Step = Step.OTHER


def _described(backoff: Backoff) -> str:
    """A backoff in words: ``1 s doubling to 30 s``."""
    growth = "doubling" if backoff.factor == 2 else f"growing {backoff.factor:g}x"
    return f"{backoff.base:g} s {growth} to {backoff.cap:g} s"


_RUN_STOPS = (
    "the run stops submitting, follows the tasks paid for, records nothing against the jobs it "
    "did not finish; fix the cause it names and rerun"
)
_ROUNDS = (
    f"the step is tried again after the call's backoff "
    f"({_described(call_backoff(RetryPolicy()))}, full jitter), at most {MAX_JOB_ROUNDS} rounds "
    "counted while the service answers other jobs; then `RETRIES_EXHAUSTED`, which a plain rerun "
    "retries"
)

TABLE: tuple[Row, ...] = (
    Row(
        "the job's own: its request refused for its content, its task failed or unknown to the "
        "service, its line invalid, a name too long",
        (
            BadRequestError(400, reason="ILLEGAL_PROMPT"),
            BadRequestError(400, reason="INVALID_REQUEST_BODY"),
            TaskFailedError("t", "TASK_STATUS_FAILED"),
            NotFoundError(404, reason="TASK_NOT_FOUND"),
            ValidationError("steps", 0, "1 to 100"),
            LocalIOError("too long", errno=36),
        ),
        Kind.JOB,
        "recorded failed with the reason, the others go on; a rerun leaves it alone unless "
        "`--retry-failed` (`INVALID_REQUEST_BODY` to a body naming cached assets first uploads "
        "the files again and sends it once more)",
        ExitStatus.FAILED,
    ),
    Row(
        "the run's: the key, the account, the endpoint (`NOVITA_BASE_URL`), this machine's disk, "
        "the output's store",
        (
            AuthenticationError(401, reason="INVALID_API_KEY"),
            PermissionDeniedError(403, reason="BILLING_AUTH_FAILED"),
            BadRequestError(400, reason="BILLING_BALANCE_NOT_ENOUGH"),
            NotFoundError(404, reason="API_NOT_FOUND"),
            LocalIOError("full", errno=28),
            LocalIOError("read-only", errno=30),
            StorageError("refused", reason="STORAGE_PERMISSION"),
        ),
        Kind.RUN,
        _RUN_STOPS,
        ExitStatus.STOPPED,
    ),
    Row(
        "429 on a submission",
        (RateLimitError(429, reason="RATE_LIMITED", retry_after=3.0),),
        Kind.TRANSIENT,
        "every submitter of that endpoint pauses for its `Retry-After` "
        "(at most `--retry-after-cap`, "
        f"{RATE_LIMITED.hint_cap:g} s), or without one {_described(RATE_LIMITED)} (429s in a row, "
        "equal jitter); never a job failure",
        ExitStatus.OK,
        Step.SUBMIT,
    ),
    Row(
        "an outage: connection refused or reset, DNS, timeouts, 5xx",
        (APIConnectionError("refused"), ServerError(503, reason="SERVICE_UNAVAILABLE")),
        Kind.TRANSIENT,
        f"every request of the run pauses together, {_described(OUTAGE)} (equal jitter), ending at "
        "the service's next answer; the tasks paid for are still followed",
        ExitStatus.OK,
    ),
    Row(
        "an outage longer than `--max-outage`, 300 s by default",
        (OutageError(301.0, APIConnectionError("refused")),),
        Kind.RUN,
        _RUN_STOPS,
        ExitStatus.STOPPED,
    ),
    Row(
        "one job's step failing alone: 408, 409, 425, image URLs that keep expiring",
        (APIStatusError(408), ImageURLExpiredError("expired")),
        Kind.TRANSIENT,
        _ROUNDS,
        ExitStatus.OK,
    ),
    Row(
        "a submission sent whose answer was lost",
        (SubmitOutcomeUnknownError("lost"), InvalidResponseError("no task id")),
        Kind.UNKNOWN_OUTCOME,
        "recorded `SUBMIT_OUTCOME_UNKNOWN` (a task may exist and be billed): resent only with "
        "`--retry-unknown-submits`",
        ExitStatus.FAILED,
        Step.SUBMIT,
    ),
    Row(
        "`--max-tasks` new tasks submitted",
        (BudgetReachedError(10),),
        Kind.RUN,
        "the run stops submitting and follows the tasks paid for",
        ExitStatus.BUDGET,
    ),
)

EXITS: tuple[tuple[ExitStatus, str, str], ...] = (
    (ExitStatus.OK, "every job succeeded", "nothing: every job is replayed from the journal"),
    (
        ExitStatus.FAILED,
        "some jobs failed (their own fault, or `RETRIES_EXHAUSTED`, `SUBMIT_OUTCOME_UNKNOWN`)",
        "tries `RETRIES_EXHAUSTED` again; the others need the flag the summary names",
    ),
    (
        ExitStatus.USAGE,
        "bad usage or invalid input, found before anything was sent",
        "the same, until the command is fixed",
    ),
    (
        ExitStatus.STOPPED,
        "the run stopped for a run-level cause, named in one line with its fix",
        "continues where it stopped, once the cause is fixed",
    ),
    (
        ExitStatus.BUDGET,
        "the run stopped having submitted its `--max-tasks`",
        "continues, with a budget of its own",
    ),
    (ExitStatus.INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)", "continues where it stopped"),
)


def markdown() -> str:
    """The README's failure and exit-status tables, between their markers."""
    lines = [
        "<!-- failure-table:start -->",
        "<!-- generated by `python tests/test_failure_table.py`: do not edit -->",
        "",
        "| what went wrong | whose | what follows | exit status |",
        "|---|---|---|---|",
    ]
    for row in TABLE:
        reasons = ", ".join(dict.fromkeys(f"`{_shown(error)}`" for error in row.errors))
        lines.append(
            f"| {row.what} ({reasons}) | {row.kind.value} | {row.follows} | {int(row.exit)} |"
        )
    lines += ["", "| status | meaning | what a rerun of the same command does |", "|---|---|---|"]
    lines += [f"| {int(status)} | {meaning} | {rerun} |" for status, meaning, rerun in EXITS]
    lines.append("<!-- failure-table:end -->")
    return "\n".join(lines) + "\n"


def _shown(error: BaseException) -> str:
    status, reason = getattr(error, "status", None), getattr(error, "reason", "")
    if status is None:
        return str(reason)
    return str(status) if reason == f"HTTP_{status}" else f"{status} {reason}"


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


def test_this_file_renders_the_table_from_the_command_line() -> None:
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True)
    assert done.stdout == markdown()


if __name__ == "__main__":
    sys.stdout.write(markdown())
