"""Signals during a run, and the one error worth showing out of a task group's.

Signals: the first SIGINT or SIGTERM stops the run (nothing new is submitted; submissions awaiting
their answer get ``stop_grace`` seconds). Later ones never kill the process, which would abandon
those submissions silently and make a rerun pay for them again: the second says how many are still
awaiting their answer and keeps waiting, the third abandons them (each recorded
``SUBMIT_OUTCOME_UNKNOWN``) and the command exits with 130. Rerunning the same command resumes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio
import anyio.abc

from .. import ConfigurationError, LocalIOError, NovitaError, RunStoppedError, ValidationError
from ..batch import BatchRunner

__all__ = ["plural", "real_error", "until_signalled"]

_T = TypeVar("_T")

# The error worth showing first when a task group gathered several: the run's own verdict, then
# this machine's, then the user's input, then the rest; a cancellation one failure caused in
# another task says nothing.
_MOST_TELLING: tuple[type[BaseException], ...] = (
    SystemExit,
    KeyboardInterrupt,
    RunStoppedError,
    LocalIOError,
    ValidationError,
    ConfigurationError,
    NovitaError,
    Exception,
)


def _leaves(error: BaseException) -> Iterable[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _rank(error: BaseException) -> int:
    if isinstance(error, asyncio.CancelledError):
        return len(_MOST_TELLING) + 1
    kinds = (n for n, kind in enumerate(_MOST_TELLING) if isinstance(error, kind))
    return next(kinds, len(_MOST_TELLING))


def real_error(error: BaseException) -> BaseException:
    """What went wrong: ``error`` itself, or out of the exception groups task groups wrap errors
    in, the one leaf that tells most (the first of the most telling kind)."""
    leaves = list(_leaves(error))
    return min(leaves, key=_rank) if leaves else error


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


class _Signals:
    """What each SIGINT/SIGTERM does to a run: stop it, say what it waits for, abandon that."""

    def __init__(self, runner: BatchRunner | None, say: Callable[[str], object]) -> None:
        self.runner = runner
        self.say = say
        self.count = 0

    def _awaiting(self) -> int:
        return 0 if self.runner is None else self.runner.awaiting_answers

    def handle(self, stop: anyio.CancelScope) -> None:
        self.count += 1
        awaiting = self._awaiting()
        if self.count == 1:
            stop.cancel()
            waiting = ""
            if awaiting and self.runner is not None:
                them = plural(awaiting, "submission", "submissions")
                waiting = f"; {them} awaiting an answer get {self.runner.options.stop_grace:g}s"
            self.say(
                f"stopping: nothing new is submitted{waiting} (press Ctrl-C again to see what "
                "the run still waits for)"
            )
        elif self.count == 2 and awaiting:
            them = plural(awaiting, "submission is", "submissions are")
            self.say(
                f"{them} still awaiting the answer that records the task; waiting for "
                f"{'it' if awaiting == 1 else 'them'} so that no task is paid for twice "
                "(press Ctrl-C again to abandon them; they will be reported as unknown outcome)"
            )
        elif awaiting and self.runner is not None:
            self.runner.abandon_submissions()
            them = plural(awaiting, "submission", "submissions")
            self.say(
                f"abandoning {them} awaiting an answer: each is recorded SUBMIT_OUTCOME_UNKNOWN "
                "(a task may exist and be billed; the summary says what to do)"
            )
        else:
            self.say("no submission awaits its answer; the run is writing its journal and results")


async def until_signalled(
    body: Callable[[], Awaitable[_T]],
    runner: BatchRunner | None = None,
    *,
    say: Callable[[str], object] = print,
) -> tuple[_T | None, bool]:
    """Run ``body`` until it returns or SIGINT/SIGTERM stops it; (its result, interrupted).

    The first signal cancels ``body``; the signals are listened to until ``body`` has returned,
    so later ones never kill the process: the second tells (``say``) how many of ``runner``'s
    submissions are still awaiting their answer, the third abandons them (see the module's
    docstring). An exception ``body`` raises comes out as itself (:func:`real_error`), not
    wrapped in an exception group.
    """
    outcome: list[_T] = []
    failure: list[Exception] = []
    signals = _Signals(runner, say)
    stop = anyio.CancelScope()

    async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            task_status.started()  # from here on, no signal reaches the default handler
            async for _ in received:
                signals.handle(stop)

    async with anyio.create_task_group() as group:
        await group.start(watch)
        with stop:
            try:
                outcome.append(await body())
            except Exception as exc:  # raised below, out of this task group
                failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise real_error(failure[0])
    return (outcome[0] if outcome else None), signals.count > 0
