"""Shim, removed in Phase B: the policy is ``novita_async._failures``."""

from __future__ import annotations

from .._exceptions import BudgetReachedError, RetriesExhaustedError
from .._failures import RETRYABLE_REASONS, Pause, Step, classify, may_be_unknown_asset
from .._failures import Kind as Blame

__all__ = [
    "RETRYABLE_REASONS",
    "Blame",
    "BudgetReachedError",
    "RetriesExhaustedError",
    "blame",
    "is_outage",
    "may_be_unknown_asset",
    "run_stop_advice",
]


def blame(error: BaseException, *, submitting: bool = False) -> Blame:
    return classify(error, step=Step.SUBMIT if submitting else Step.OTHER).kind


def is_outage(error: BaseException) -> bool:
    return classify(error).pause is Pause.EVERYTHING


def run_stop_advice(error: BaseException) -> tuple[str, str]:
    return classify(error).advice()
