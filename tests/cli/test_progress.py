"""Progress from batch events: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

import pytest

from novita_async._cli._progress import BatchProgress, Tally
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


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with BatchProgress(3, stream=stream) as progress:
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
    with BatchProgress(3, stream=stream) as progress:
        assert not progress.plain
        for event in events():
            progress.on_event(event)
    drawn = stream.getvalue()
    assert "3/3" in drawn and "done 2" in drawn and "failed 1" in drawn and "/min" in drawn
    plain = Terminal()
    with BatchProgress(3, plain=True, stream=plain) as progress:
        progress.on_event(events()[5])
    assert "succeeded a" in plain.getvalue() and "\x1b[" not in plain.getvalue()
