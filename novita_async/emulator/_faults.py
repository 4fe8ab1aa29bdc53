"""Fault injection: what goes wrong on each route, drawn from a seeded generator or scripted.

Outcomes answered *instead of* running the route (no side effects: for ``submit``, no task is
created): ``error_5xx`` (JSON body), ``html_5xx`` (a gateway's HTML page), ``rate_429``
(``Retry-After`` in seconds or as an HTTP date), ``reset_before`` (the connection is reset
before any answer; ``reset`` is the same) and ``expire`` (403 "Request has expired").

Outcomes applied *after* the route ran (its side effects happened: for ``submit``, the task exists
and will be billed): ``reset_after`` (the answer is lost to a reset), ``truncate`` (Content-Length
announced, part of the body sent, then the connection closed). ``latency`` + ``jitter`` delay every
request; ``bandwidth`` caps the bytes per second of every body.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
import attrs

__all__ = ["ROUTES", "Decision", "FaultSpec", "Faults", "Outcome", "check_route"]

ROUTES = ("upload", "submit", "result", "models", "image")

DEFAULT_TASK_FAILURE = "task failed: the face could not be detected in the reference image"


def check_route(route: str) -> str:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; routes are: {', '.join(ROUTES)}")
    return route


class Outcome(enum.Enum):
    OK = "ok"
    ERROR_5XX = "error_5xx"
    HTML_5XX = "html_5xx"
    RATE_429 = "rate_429"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    TRUNCATE = "truncate"
    EXPIRE = "expire"


def _probability(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


_prob = attrs.field(default=0.0, validator=_probability, converter=float)


@attrs.frozen(kw_only=True)
class FaultSpec:
    """The faults of one route: probabilities of each outcome, plus delays and a bandwidth cap."""

    error_5xx: float = _prob
    html_5xx: float = _prob
    rate_429: float = _prob
    reset: float = _prob
    """Alias of ``reset_before``; the two add up."""
    reset_before: float = _prob
    reset_after: float = _prob
    truncate: float = _prob
    expire: float = _prob
    retry_after: float = attrs.field(default=1.0, validator=_non_negative, converter=float)
    """Seconds announced by injected 429 answers."""
    retry_after_http_date: float = _prob
    """Fraction of injected 429 answers that give ``Retry-After`` as an HTTP date."""
    latency: float = attrs.field(default=0.0, validator=_non_negative, converter=float)
    jitter: float = attrs.field(default=0.0, validator=_non_negative, converter=float)
    bandwidth: float | None = attrs.field(default=None, validator=_positive)
    """Bytes per second of every response body on the route (None: unlimited)."""

    def __attrs_post_init__(self) -> None:
        total = sum(p for _, p in self.weights())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities add up to {total:.3f} > 1")

    def weights(self) -> list[tuple[Outcome, float]]:
        return [
            (Outcome.ERROR_5XX, self.error_5xx),
            (Outcome.HTML_5XX, self.html_5xx),
            (Outcome.RATE_429, self.rate_429),
            (Outcome.RESET_BEFORE, self.reset + self.reset_before),
            (Outcome.RESET_AFTER, self.reset_after),
            (Outcome.TRUNCATE, self.truncate),
            (Outcome.EXPIRE, self.expire),
        ]

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``"error_5xx=0.05,reset_before=0.02,latency=0.1"`` -> FaultSpec."""
        fields: dict[str, Any] = {}
        known = {a.name for a in attrs.fields(cls)}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(
                    f"bad fault {item!r}; expected NAME=VALUE with NAME one of {known}"
                )
            fields[name] = float(value)
        return cls(**fields)


@attrs.frozen
class Decision:
    """What happens to one request."""

    outcome: Outcome = Outcome.OK
    status: int = 200
    retry_after: float = 0.0
    http_date: bool = False
    delay: float = 0.0
    bandwidth: float | None = None


def parse_script_token(token: str) -> Decision:
    """One scripted outcome: ``ok``, ``500``/``502``/``503``/``504``, ``html`` (or ``html504``),
    ``429``, ``429:SECONDS``, ``429date``, ``reset`` / ``reset_before``, ``reset_after``,
    ``truncate``, ``expire``, ``delay:SECONDS``."""
    word, _, arg = token.strip().lower().partition(":")
    if word == "ok":
        return Decision()
    if word == "delay" and arg:
        return Decision(delay=float(arg))
    if word in ("500", "502", "503", "504"):
        return Decision(Outcome.ERROR_5XX, status=int(word))
    if word.startswith("html"):
        status = int(word[4:] or 502)
        if status not in (500, 502, 503, 504):
            raise ValueError(f"bad scripted outcome {token!r}")
        return Decision(Outcome.HTML_5XX, status=status)
    if word in ("429", "429date"):
        seconds = float(arg) if arg else 1.0
        return Decision(
            Outcome.RATE_429, status=429, retry_after=seconds, http_date=word == "429date"
        )
    named = {
        "reset": Outcome.RESET_BEFORE,
        "reset_before": Outcome.RESET_BEFORE,
        "reset_after": Outcome.RESET_AFTER,
        "truncate": Outcome.TRUNCATE,
        "expire": Outcome.EXPIRE,
        "expired": Outcome.EXPIRE,
    }
    if word in named:
        return Decision(named[word], status=403 if word.startswith("expire") else 200)
    raise ValueError(f"bad scripted outcome {token!r}")


class Faults:
    """Per-route fault injection, changeable while the emulator runs.

    ``set(route, FaultSpec(...))`` draws outcomes at random (seeded); ``script(route, [...])``
    queues exact outcomes for the next requests to the route; ``hold(route)`` parks requests until
    ``release(route)``; ``fail_next_tasks(n)`` makes the next n submitted tasks fail.
    """

    def __init__(self, seed: int | None = None, initial: dict[str, FaultSpec] | None = None):
        self._seed = seed
        self._specs: dict[str, FaultSpec] = {}
        self._scripts: dict[str, deque[Decision]] = {route: deque() for route in ROUTES}
        self._rngs = {route: self._rng(route) for route in ROUTES}
        self._gates: dict[str, anyio.Event] = {}
        self._task_failures: deque[str] = deque()
        for route, spec in (initial or {}).items():
            self.set(route, spec)

    def _rng(self, route: str) -> random.Random:
        # One generator per route, so traffic on one route does not shift the draws of another.
        return random.Random(None if self._seed is None else f"{self._seed}:{route}")

    def set(self, route: str, spec: FaultSpec | None = None, **fields: Any) -> None:
        """Replace the route's fault spec (``set("submit", error_5xx=0.1)`` works too)."""
        check_route(route)
        self._specs[route] = attrs.evolve(spec or FaultSpec(), **fields)

    def get(self, route: str) -> FaultSpec:
        return self._specs.get(check_route(route), FaultSpec())

    def script(self, route: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next requests to ``route``, in order; then back to the spec."""
        self._scripts[check_route(route)].extend(parse_script_token(o) for o in outcomes)

    def pending(self, route: str) -> int:
        """How many scripted outcomes are still queued for ``route``."""
        return len(self._scripts[check_route(route)])

    def clear(self, route: str | None = None) -> None:
        """Remove specs and scripts (of one route, or all) and release held requests."""
        for name in ROUTES if route is None else (check_route(route),):
            self._specs.pop(name, None)
            self._scripts[name].clear()
            self.release(name)
        if route is None:
            self._task_failures.clear()

    def hold(self, route: str) -> None:
        """Park every request to ``route`` (after it is counted as in flight) until release."""
        if check_route(route) not in self._gates:
            self._gates[route] = anyio.Event()

    def release(self, route: str) -> None:
        gate = self._gates.pop(check_route(route), None)
        if gate is not None:
            gate.set()

    def fail_next_tasks(self, count: int = 1, reason: str = DEFAULT_TASK_FAILURE) -> None:
        """The next ``count`` tasks submitted end TASK_STATUS_FAILED with ``reason``."""
        self._task_failures.extend([reason] * count)

    # --- used by the server ---------------------------------------------------------------

    async def wait_gate(self, route: str) -> None:
        gate = self._gates.get(route)
        if gate is not None:
            await gate.wait()

    def take_task_failure(self) -> str | None:
        return self._task_failures.popleft() if self._task_failures else None

    def decide(self, route: str) -> Decision:
        spec = self.get(route)
        rng = self._rngs[route]
        delay = spec.latency + (rng.uniform(0.0, spec.jitter) if spec.jitter else 0.0)
        script = self._scripts[route]
        if script:
            scripted = script.popleft()
            return attrs.evolve(scripted, delay=delay + scripted.delay, bandwidth=spec.bandwidth)
        outcome = Outcome.OK
        draw = rng.random()
        for candidate, weight in spec.weights():
            if draw < weight:
                outcome = candidate
                break
            draw -= weight
        status = 200
        if outcome is Outcome.ERROR_5XX:
            status = rng.choice((500, 503))
        elif outcome is Outcome.HTML_5XX:
            status = rng.choice((502, 504))
        elif outcome is Outcome.RATE_429:
            status = 429
        elif outcome is Outcome.EXPIRE:
            status = 403
        http_date = outcome is Outcome.RATE_429 and rng.random() < spec.retry_after_http_date
        return Decision(
            outcome,
            status=status,
            retry_after=spec.retry_after,
            http_date=http_date,
            delay=delay,
            bandwidth=spec.bandwidth,
        )
