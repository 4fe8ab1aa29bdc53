"""Server-free tables: retry decisions, Retry-After parsing, backoff, polling delays, redaction."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ImageURLExpiredError,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    RetriesExhaustedError,
    RetryPolicy,
    ServerError,
    SubmitOutcomeUnknownError,
    Task,
    TaskResult,
    TaskStatus,
)
from novita_async._completion import PollTracker
from novita_async._config import mask_secret, redact_url, scrub
from novita_async._failures import (
    MAX_JOB_ROUNDS,
    OUTAGE,
    RATE_LIMITED,
    Action,
    Backoff,
    FailureKind,
    Next,
    Pause,
    Rounds,
    Step,
    attempt_may_repeat,
    decide,
    parse_retry_after,
    poll_backoff,
    rides_out_poll_failure,
)

# Backoff, Retry-After, polls and task times on the virtual clock (support.VirtualTimeLoop).
pytestmark = pytest.mark.virtual_time

NOT_SENT, LOST, STATUS = FailureKind.NOT_SENT, FailureKind.ANSWER_LOST, FailureKind.STATUS


@pytest.mark.parametrize(
    ("kind", "status", "creates_task", "retry_unknown", "expected"),
    [
        (NOT_SENT, None, False, False, True),
        (NOT_SENT, None, True, False, True),  # nothing reached the server: safe to resend
        (LOST, None, False, False, True),
        (LOST, None, True, False, False),  # a submit whose answer was lost: never blindly
        (LOST, None, True, True, True),  # ... unless the caller opted in
        (STATUS, 408, False, False, True),
        (STATUS, 429, False, False, True),
        (STATUS, 429, True, False, True),
        (STATUS, 500, False, False, True),
        (STATUS, 500, True, False, True),
        (STATUS, 502, False, False, True),
        (STATUS, 503, True, False, True),
        (STATUS, 504, False, False, True),
        (STATUS, 599, False, False, True),
        (STATUS, 400, False, False, False),
        (STATUS, 401, False, False, False),
        (STATUS, 403, False, False, False),
        (STATUS, 404, False, False, False),
        (STATUS, 409, True, False, False),
        (STATUS, 422, False, False, False),
    ],
)
def test_retry_decision_table(
    kind: FailureKind, status: int | None, creates_task: bool, retry_unknown: bool, expected: bool
) -> None:
    policy = RetryPolicy(attempts=3, retry_unknown_submits=retry_unknown)
    got = attempt_may_repeat(policy, kind, attempt=1, status=status, creates_task=creates_task)
    assert got is expected


@pytest.mark.parametrize(
    ("status", "expected"), [(429, False), (500, True), (503, True), (408, True), (400, False)]
)
def test_a_policy_can_leave_429_to_its_caller(status: int, expected: bool) -> None:
    # The batch runner pauses every submitter on a 429 itself: the client must hand it back.
    policy = RetryPolicy(retry_rate_limited=False)
    got = attempt_may_repeat(policy, STATUS, attempt=1, status=status, creates_task=True)
    assert got is expected


@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
def test_retries_stop_after_the_configured_attempts(attempts: int) -> None:
    policy = RetryPolicy(attempts=attempts)
    decisions = [attempt_may_repeat(policy, NOT_SENT, attempt=n) for n in range(1, attempts + 1)]
    assert decisions == [True] * (attempts - 1) + [False]


NOW = datetime(2024, 2, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("120", 120.0),
        ("Sat, 24 Feb 2024 12:00:30 GMT", 30.0),  # HTTP date, 30 s ahead
        ("Saturday, 24-Feb-24 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Sat, 24 Feb 2024 11:59:00 GMT", 0.0),  # in the past: go now
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_delay_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(retry_after_cap=10.0)
    assert policy.delay(1, 3.0) == 3.0
    assert policy.delay(1, 3600.0) == 10.0
    assert policy.delay(1, 0.0) == 0.0


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_the_exponential_ceiling(attempt: int, seed: int) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0)
    delay = policy.delay(attempt, None, rand=random.Random(seed))
    assert 0.0 <= delay <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_is_jittered_not_constant() -> None:
    policy = RetryPolicy()
    rand = random.Random(1)
    assert len({policy.backoff(3, rand=rand) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"attempts": 1.5}, {"backoff_base": -1}, {"retry_after_cap": "x"}]
)
def test_bad_retry_policy_is_a_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- polling ----------------------------------------------------------------------------------


def task(eta: float | None = None, progress: float | None = None) -> Task:
    return Task("t", TaskStatus.PROCESSING, eta=eta, progress_percent=progress)


def test_an_honest_eta_means_one_wait_of_eta_plus_margin() -> None:
    policy = PollPolicy(min_delay=1.0, max_delay=120.0, margin=0.5)
    assert policy.next_delay(task(eta=40), polls=1, elapsed=0.1) == 40.5


@given(eta=st.floats(0.001, 1e6), polls=st.integers(1, 50), elapsed=st.floats(0, 1e4))
def test_poll_delay_stays_within_bounds(eta: float, polls: int, elapsed: float) -> None:
    policy = PollPolicy(min_delay=0.5, max_delay=20.0)
    for t in (task(eta=eta), task(progress=50), task(), None):
        assert 0.5 <= policy.next_delay(t, polls=polls, elapsed=elapsed) <= 20.0


def test_progress_without_eta_extrapolates_the_remaining_time() -> None:
    policy = PollPolicy(min_delay=0.1, max_delay=100.0, margin=0.5)
    # 25 % done after 10 s: 30 s to go.
    assert policy.next_delay(task(progress=25), polls=1, elapsed=10.0) == pytest.approx(30.5)


def test_no_hint_backs_off_geometrically() -> None:
    policy = PollPolicy(min_delay=0.1, max_delay=100.0, initial_delay=2.0, growth=1.5)
    delays = [policy.next_delay(task(eta=0), polls=n, elapsed=1.0) for n in (1, 2, 3)]
    assert delays == [2.0, 3.0, 4.5]


def test_a_poll_just_before_the_predicted_end_is_followed_a_margin_later_not_at_eta() -> None:
    # The service's eta is whole seconds: a task 10 ms from its end says "1". With a prediction,
    # the next poll lands a margin after the predicted end, once; then the answers time it again.
    policy = PollPolicy(min_delay=0.01, max_delay=30.0, margin=0.1)
    tracker = PollTracker("t", policy, started=100.0, timeout=None)
    assert tracker.first_poll(1.0) == 101.0
    running = TaskResult(task=task(eta=1))
    assert tracker.answered(running, now=101.0) == pytest.approx(101.1)
    assert tracker.answered(running, now=101.1) == pytest.approx(102.2)  # eta + margin now
    # Without a prediction, the eta decides from the start.
    plain = PollTracker("t", policy, started=100.0, timeout=None)
    assert plain.first_poll(None) == 100.0
    assert plain.answered(running, now=100.99) == pytest.approx(102.09)


def test_poll_policy_rejects_inverted_bounds() -> None:
    with pytest.raises(ConfigurationError):
        PollPolicy(min_delay=10, max_delay=1)


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://bucket.s3.amazonaws.com/prod/a.jpeg?X-Amz-Signature=abc&X-Amz-Credential=x",
            "https://bucket.s3.amazonaws.com/prod/a.jpeg",
        ),
        ("https://user:pw@host/p?q=1#frag", "https://host/p"),
        (
            "https://api.novita.ai/v3/async/task-result?task_id=1",
            "https://api.novita.ai/v3/async/task-result",
        ),
        ("not a url?secret=1", "not a url"),
    ],
)
def test_redact_url_drops_query_fragment_and_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_are_masked_and_scrubbed() -> None:
    key = "sk_live_0123456789abcdef"
    assert key not in mask_secret(key)
    assert mask_secret(key).endswith("cdef")
    assert mask_secret("short") == "***"
    assert key not in scrub(f"Bearer {key} and again {key}", key)
    assert scrub("nothing", "") == "nothing"


def test_retry_after_date_is_relative_to_now() -> None:
    later = (NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, now=NOW) == 90.0


# --- the one backoff and the job's decision (novita_async._failures) ----------------------------


@given(n=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_every_backoff_row_draws_within_its_floor_and_ceiling(n: int, seed: int) -> None:
    for row in (RATE_LIMITED, OUTAGE):  # "equal" jitter
        ceiling = min(row.cap, row.base * 2 ** (n - 1))
        assert ceiling / 2 <= row.delay(n, rand=random.Random(seed)) <= ceiling
    poll = PollPolicy(min_delay=3.0, max_delay=30.0, initial_delay=2.0, growth=1.5)
    # No jitter for polls: the clamp of the geometric growth, at once.
    assert poll_backoff(poll).delay(n) == min(max(2.0 * 1.5 ** (n - 1), 3.0), 30.0)


def test_a_server_hint_wins_up_to_its_cap_and_a_bad_one_is_ignored() -> None:
    row = Backoff(base=1.0, cap=60.0, floor=0.5, hint_cap=10.0)
    assert row.delay(5, 3.0) == 3.0
    assert row.delay(5, 3600.0) == 10.0
    for bad in (-1.0, math.inf, math.nan):
        assert 8.0 <= row.delay(5, bad, rand=random.Random(0)) <= 16.0


def _decide(error: Exception, rounds: Rounds, answers: int) -> Next:
    return decide(error, step=Step.OTHER, rounds=rounds, answers=answers, policy=RetryPolicy())


def test_a_job_rounds_count_only_while_the_service_answers_others() -> None:
    outage = APIConnectionError("refused")
    first = _decide(outage, Rounds(), answers=0)
    assert (first.action, first.counted, first.round, first.pause) == (
        Action.RETRY,
        True,
        1,
        Pause.EVERYTHING,
    )
    # No answer since: the same round, however often it fails.
    again = _decide(outage, Rounds(count=1, answers_seen=0), answers=0)
    assert (again.action, again.counted) == (Action.RETRY, False)
    assert 0.0 <= again.wait <= 0.5  # the call's backoff for round 1
    last = _decide(outage, Rounds(count=MAX_JOB_ROUNDS, answers_seen=0), answers=1)
    assert last.action is Action.END_JOB
    assert isinstance(last.record, RetriesExhaustedError)
    assert last.pause is Pause.EVERYTHING  # the others still meet the outage


def test_the_decision_by_kind() -> None:
    refused = BadRequestError(400, reason="ILLEGAL_PROMPT")
    assert (_decide(refused, Rounds(), 0).action, _decide(refused, Rounds(), 0).record) == (
        Action.END_JOB,
        refused,
    )
    assert _decide(AuthenticationError(401), Rounds(), 0).action is Action.STOP_RUN
    lost = _decide(SubmitOutcomeUnknownError("lost"), Rounds(), 0)
    assert (lost.action, lost.pause) == (Action.END_JOB, Pause.NONE)
    limited = _decide(RateLimitError(429, retry_after=2.0), Rounds(), 0)
    assert (limited.pause, limited.verdict.error.retry_after) == (Pause.SUBMISSIONS, 2.0)


def test_a_wait_rides_out_429_5xx_and_no_answer_only() -> None:
    assert rides_out_poll_failure(RateLimitError(429))
    assert rides_out_poll_failure(ServerError(502))
    assert rides_out_poll_failure(APIConnectionError("reset"))
    assert not rides_out_poll_failure(ImageURLExpiredError("old"))
    assert not rides_out_poll_failure(NotFoundError(404, reason="TASK_NOT_FOUND"))
