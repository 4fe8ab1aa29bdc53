"""Progress from batch events: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io
import itertools

import anyio
import pytest

from novita_async._cli._display import BatchProgress, Tally
from novita_async.batch import BatchEvent, BatchEventKind

K = BatchEventKind


def events() -> list[BatchEvent]:
    return [
        BatchEvent(K.QUEUED, "a"),
        BatchEvent(K.SUBMITTED, "a", task_id="t1"),
        BatchEvent(K.RESUMED, "b", task_id="t0"),
        BatchEvent(K.RUNNING, "a", task_id="t1", progress_percent=50),
        BatchEvent(K.RETRIED, "a", reason="RATE_LIMIT_EXCEEDED"),
        BatchEvent(K.SUCCEEDED, "a", task_id="t1", files=("a/0.png", "a/1.png")),
        BatchEvent(K.FAILED, "b", task_id="t0", reason="TASK_FAILED", message="boom"),
        BatchEvent(K.SUCCEEDED, "c", files=("c/0.png",), replayed=True),
    ]


def test_tally_counts_stages() -> None:
    tally = Tally()
    ended = [tally.count(e) for e in events()[:3]]
    assert ended == [False, False, False]
    assert (tally.submitted, tally.running, tally.done, tally.failed) == (2, 2, 0, 0)
    for event in events()[3:]:
        tally.count(event)
    assert (tally.submitted, tally.running, tally.done, tally.failed) == (2, 0, 2, 1)
    assert str(tally) == "submitted 2 running 0 done 2 failed 1"


def ticks() -> itertools.count[float]:
    """A clock that moves one second each time it is read: outside an event loop, anyio's cannot
    be read."""
    return itertools.count(0.0, 1.0)


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with BatchProgress(3, stream=stream, clock=ticks().__next__) as progress:
        assert progress.plain
        for event in events():
            progress.on_event(event)
        progress.note("a note")
    lines = [line.split("s ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == [
        "retrying a: RATE_LIMIT_EXCEEDED",
        "[1/3] succeeded a (2 images)",
        "[2/3] failed    b: TASK_FAILED: boom",
        "[3/3] succeeded c (1 image, from an earlier run)",
        "a note",
    ]
    assert "\x1b[" not in stream.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_unless_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    stream = Terminal()
    with BatchProgress(3, stream=stream, clock=ticks().__next__) as progress:
        assert not progress.plain
        for event in events():
            progress.on_event(event)
    drawn = stream.getvalue()
    assert "3/3" in drawn and "done 2" in drawn and "failed 1" in drawn and "/min" in drawn
    plain = Terminal()
    with BatchProgress(3, plain=True, stream=plain, clock=ticks().__next__) as progress:
        progress.on_event(events()[5])
    assert "succeeded a" in plain.getvalue() and "\x1b[" not in plain.getvalue()


def run_events() -> list[BatchEvent]:
    return [
        BatchEvent(K.PAUSED, "", reason="CONNECTION_ERROR",
                   message="paused: the API has been unreachable for 40s (CONNECTION_ERROR); "
                   "next try in 8.0s"),
        BatchEvent(K.CONTINUED, "", message="the API answers again after 52s"),
        BatchEvent(K.PAUSED, "", reason="RATE_LIMIT_EXCEEDED",
                   message="submissions paused for 60.0s: rate limited (429, Retry-After 86400s, "
                   "capped at 60s)"),
        BatchEvent(K.STOPPED, "", reason="INVALID_API_KEY",
                   message="the service refused the API key: check NOVITA_API_KEY"),
    ]  # fmt: skip


def test_run_events_are_plain_lines_of_their_own() -> None:
    stream = io.StringIO()
    with BatchProgress(3, stream=stream, clock=ticks().__next__) as progress:
        for event in run_events():
            progress.on_event(event)
        assert (progress.tally.submitted, progress.tally.ended) == (0, 0)
    lines = stream.getvalue().splitlines()
    assert [line.split("s ", 1)[1] for line in lines] == [
        "paused: the API has been unreachable for 40s (CONNECTION_ERROR); next try in 8.0s",
        "continued: the API answers again after 52s",
        "submissions paused for 60.0s: rate limited (429, Retry-After 86400s, capped at 60s)",
        "stopped: the service refused the API key: check NOVITA_API_KEY",
    ]
    # Seconds since the display began, on the clock it was given.
    assert [line.split("s ", 1)[0].strip() for line in lines] == ["1.0", "2.0", "3.0", "4.0"]


def test_run_status_line_under_the_bar_while_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    stream = Terminal()
    pause, resume, rate_limited, stop = run_events()
    with BatchProgress(3, stream=stream, clock=ticks().__next__) as progress:
        bar = progress._progress
        assert bar is not None

        def status() -> str | None:
            shown = list(bar.get_renderables())[1:]
            return None if not shown else str(shown[0])

        assert status() is None
        progress.on_event(pause)
        assert status() == pause.message
        progress.on_event(resume)
        assert status() is None
        progress.on_event(rate_limited)
        assert status() == rate_limited.message
        progress.on_event(BatchEvent(K.SUBMITTED, "a", task_id="t1"))  # submitting again
        assert status() is None
        progress.on_event(stop)
        assert status() == "stopped: the service refused the API key: check NOVITA_API_KEY"
    drawn = stream.getvalue()
    assert "next try in 8.0s" in drawn and "check NOVITA_API_KEY" in drawn


def test_plain_lines_time_on_anyio_clock_inside_the_loop() -> None:
    stream = io.StringIO()

    async def main() -> None:
        with BatchProgress(1, stream=stream) as progress:
            progress.note("begun")

    anyio.run(main)
    assert stream.getvalue().split() == ["0.0s", "begun"]
