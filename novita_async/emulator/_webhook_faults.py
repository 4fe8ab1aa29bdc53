"""What goes wrong with webhook events: drawn (seeded) from a spec, or scripted event by event.

Per event, independently: ``drop`` (never sent), ``duplicate`` (delivered twice, the copy once the
first delivery has ended), ``out_of_order`` (held until the next event sent has had its first
answer, then sent: the receiver sees the later event first; held at most ``hold_seconds``),
``delay`` + ``jitter`` seconds before the first attempt. Scripted outcomes (``ok``, ``drop``,
``duplicate``, ``out_of_order``, ``delay:SECONDS``) apply to the next events, in order, before the
spec is drawn again. A receiver answering non-2xx, or too slowly, is the receiver's doing: the
emulator retries it (see :mod:`._webhooks`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs
from attrs import validators as v

from ._fault_specs import parse_fields

__all__ = ["WebhookDecision", "WebhookFaultSpec", "WebhookFaults", "parse_webhook_token"]

_probability = v.and_(v.ge(0.0), v.le(1.0))
_prob = attrs.field(default=0.0, validator=_probability, converter=float)
_seconds = attrs.field(default=0.0, validator=v.ge(0.0), converter=float)


@attrs.frozen(kw_only=True)
class WebhookFaultSpec:
    """Probabilities (each drawn on its own) and delays of webhook events."""

    drop: float = _prob
    duplicate: float = _prob
    out_of_order: float = _prob
    delay: float = _seconds
    """Seconds before an event's first attempt."""
    jitter: float = _seconds
    """Up to this many seconds more, drawn per event."""
    hold_seconds: float = attrs.field(default=10.0, validator=v.gt(0.0), converter=float)
    """The longest an out-of-order event waits for a next event."""

    @classmethod
    def parse(cls, text: str) -> WebhookFaultSpec:
        """``"drop=0.1,delay=0.2,jitter=0.1"`` -> WebhookFaultSpec."""
        return parse_fields(cls, text)


@attrs.frozen
class WebhookDecision:
    """What happens to one event."""

    drop: bool = False
    duplicate: bool = False
    out_of_order: bool = False
    delay: float = 0.0


_NAMED = {
    "ok": WebhookDecision(),
    "drop": WebhookDecision(drop=True),
    "duplicate": WebhookDecision(duplicate=True),
    "out_of_order": WebhookDecision(out_of_order=True),
}


def parse_webhook_token(token: str) -> WebhookDecision:
    """One scripted outcome: ``ok``, ``drop``, ``duplicate``, ``out_of_order``, ``delay:N``."""
    word, _, arg = token.strip().lower().partition(":")
    if word == "delay" and arg:
        seconds = float(arg)
        if seconds >= 0:
            return WebhookDecision(delay=seconds)
    elif word in _NAMED and not arg:
        return _NAMED[word]
    raise ValueError(
        f"bad webhook outcome {token!r}; use ok, drop, duplicate, out_of_order or delay:SECONDS"
    )


class WebhookFaults:
    """The webhook faults of one emulator; reach it as ``emu.faults.webhooks``."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(None if seed is None else f"{seed}:webhook")
        self._spec = WebhookFaultSpec()
        self._script: deque[WebhookDecision] = deque()

    def set(self, spec: WebhookFaultSpec | None = None, **fields: Any) -> None:
        """Replace the spec (``set(drop=0.1)`` works too)."""
        self._spec = attrs.evolve(spec or WebhookFaultSpec(), **fields)

    def get(self) -> WebhookFaultSpec:
        return self._spec

    def script(self, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next events, in order; then back to the spec."""
        self._script.extend(parse_webhook_token(token) for token in outcomes)

    def drop_next(self, count: int = 1) -> None:
        """The next ``count`` events are dropped."""
        self.script(["drop"] * count)

    def pending(self) -> int:
        """How many scripted outcomes are still queued."""
        return len(self._script)

    def clear(self) -> None:
        self._spec = WebhookFaultSpec()
        self._script.clear()

    def decide(self) -> WebhookDecision:
        spec, rng = self._spec, self._rng
        delay = spec.delay + (rng.uniform(0.0, spec.jitter) if spec.jitter else 0.0)
        if self._script:
            scripted = self._script.popleft()
            return attrs.evolve(scripted, delay=delay + scripted.delay)
        return WebhookDecision(
            drop=rng.random() < spec.drop,
            duplicate=rng.random() < spec.duplicate,
            out_of_order=rng.random() < spec.out_of_order,
            delay=delay,
        )
