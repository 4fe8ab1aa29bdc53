"""What can go wrong, as frozen values: per-request outcomes and the run-level incidents.

Per request, a route draws an :class:`Outcome` from its :class:`FaultSpec` (seeded) or takes the
next scripted one (:func:`parse_script_token`). Answered *instead of* running the route (no side
effects: for ``submit``, no task is created): ``error_5xx`` (JSON body), ``html_5xx`` (a gateway's
HTML page), ``rate_429`` (``Retry-After`` in seconds or as an HTTP date), ``reset_before`` (the
connection is reset before any answer; ``reset`` is the same) and ``expire`` (403 "Request has
expired"). Applied *after* the route ran (its side effects happened: for ``submit``, the task exists
and will be billed): ``reset_after`` (the answer is lost to a reset), ``truncate`` (Content-Length
announced, part of the body sent, then the connection closed). ``latency`` + ``jitter`` delay every
request; ``bandwidth`` caps the bytes per second of every body (``bandwidth=0.5`` trickles one byte
every two seconds). A spec with ``for_seconds`` lapses that long after it is set.

Run-level incidents: an :class:`AccountError` (after N more tasks are created, the account is
refused: 400 ``BILLING_BALANCE_NOT_ENOUGH``, 403 ``INVALID_API_KEY``...) and an :class:`Outage`
(the API origin stops listening for a while).

Each parses from ``NAME=VALUE,...`` text (the command line's form), e.g.
``error_5xx=0.05,latency=0.1`` or ``seconds=15,after=20``.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs
from attrs import validators as v

__all__ = [
    "ACCOUNT_MESSAGES",
    "API_ROUTES",
    "ROUTES",
    "SUBMIT_ROUTES",
    "V3_ROUTES",
    "AccountError",
    "Decision",
    "FaultSpec",
    "Outage",
    "Outcome",
    "check_route",
    "parse_fields",
    "parse_script_token",
]

V3_ROUTES = ("txt2img", "img2img", "inpainting", "upscale")
"""The wrapped v3 image tasks' submission routes."""
SUBMIT_ROUTES = ("submit", *V3_ROUTES)
"""The routes that create a task (``submit`` is InstantID's): what the balance pays for."""
ROUTES = ("upload", "submit", "result", "models", "image", *V3_ROUTES, "user")
API_ROUTES = ("submit", "result", "models", *V3_ROUTES, "user")
"""The routes of the API origin (``base_url``): what an account error or an outage affects."""

DEFAULT_TASK_FAILURE = "task failed: the face could not be detected in the reference image"


def check_route(route: str) -> str:
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; routes are: {', '.join(ROUTES)}")
    return route


_T = TypeVar("_T")


def parse_fields(cls: type[_T], text: str) -> _T:
    """``"name=value,other=value"`` -> ``cls(name=..., other=...)``, each value converted to the
    field's type (a tuple of strings is written ``a+b``)."""
    hints = {field.name: field.type for field in attrs.fields(attrs.resolve_types(cast(Any, cls)))}
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in hints:
            raise ValueError(
                f"bad field {item!r}; expected NAME=VALUE with NAME one of {', '.join(hints)}"
            )
        values[name] = _text_to(hints[name], value.strip())
    return cls(**values)


def _text_to(hint: Any, text: str) -> Any:
    if isinstance(hint, types.UnionType):  # X | None: the value is an X
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return tuple(filter(None, text.split("+")))
    convert: Callable[[str], Any] = hint if hint in (int, float) else str
    return convert(text)


class Outcome(enum.Enum):
    OK = "ok"
    ERROR_5XX = "error_5xx"
    HTML_5XX = "html_5xx"
    RATE_429 = "rate_429"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    TRUNCATE = "truncate"
    EXPIRE = "expire"


_probability = v.and_(v.ge(0.0), v.le(1.0))
_prob = attrs.field(default=0.0, validator=_probability, converter=float)


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


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
    retry_after: float = attrs.field(default=1.0, validator=v.ge(0.0), converter=float)
    """Seconds announced by injected 429 answers."""
    retry_after_http_date: float = _prob
    """Fraction of injected 429 answers that give ``Retry-After`` as an HTTP date."""
    latency: float = attrs.field(default=0.0, validator=v.ge(0.0), converter=float)
    jitter: float = attrs.field(default=0.0, validator=v.ge(0.0), converter=float)
    bandwidth: float | None = attrs.field(
        default=None, validator=v.optional(v.gt(0.0)), converter=_optional_float
    )
    """Bytes per second of every response body on the route (None: unlimited); below 1, one
    byte every ``1 / bandwidth`` seconds."""
    for_seconds: float | None = attrs.field(
        default=None, validator=v.optional(v.gt(0.0)), converter=_optional_float
    )
    """The spec lapses this many seconds after it is set (or after the emulator starts, for a
    spec in the configuration); None: until replaced or cleared."""

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
        return parse_fields(cls, text)


ACCOUNT_MESSAGES = {
    "BILLING_BALANCE_NOT_ENOUGH": "insufficient balance: top up your account to continue",
    "INVALID_API_KEY": "invalid API key",
    "BILLING_AUTH_FAILED": "billing authentication failed",
    "FEATURE_NOT_ALLOWED": "this feature is not allowed for your account",
    "API_NOT_ALLOWED": "this API is not allowed for your account",
}


def _api_routes(value: object) -> tuple[str, ...]:
    routes = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    for route in routes:
        if route not in API_ROUTES:
            raise ValueError(f"{route!r} is not a route of the API origin ({API_ROUTES})")
    return routes


@attrs.frozen(kw_only=True)
class AccountError:
    """After ``after`` more tasks are created, every request to ``routes`` is refused with this
    error (the documented body: ``{code, reason, message, metadata}``), until cleared.

    ``AccountError(after=20)``: the balance runs out after 20 tasks (every submission route
    refused: InstantID's ``submit`` and the v3 tasks'; see also ``credit_balance``, a balance
    that tasks spend).
    ``AccountError(status=403, reason="INVALID_API_KEY", routes=API_ROUTES)``: the key is revoked.
    """

    after: int = attrs.field(default=0, validator=v.ge(0))
    status: int = attrs.field(default=400, validator=v.and_(v.ge(400), v.le(499)))
    reason: str = attrs.field(default="BILLING_BALANCE_NOT_ENOUGH", validator=v.min_len(1))
    message: str = attrs.field()
    routes: tuple[str, ...] = attrs.field(default=SUBMIT_ROUTES, converter=_api_routes)

    @message.default
    def _message(self) -> str:
        return ACCOUNT_MESSAGES.get(self.reason, f"request refused: {self.reason}")

    @classmethod
    def parse(cls, text: str) -> AccountError:
        """``"after=20,status=403,reason=INVALID_API_KEY,routes=submit+result"``."""
        return parse_fields(cls, text)


@attrs.frozen(kw_only=True)
class Outage:
    """The API origin stops listening for ``seconds``: connections are refused (its listening
    socket is closed, and its open connections closed), then it listens again on the same port.

    It begins at once, or with ``after=N``, on the first request to the API origin once N more
    tasks have been created (that request is reset, unanswered).
    """

    seconds: float = attrs.field(validator=v.gt(0.0), converter=float)
    after: int = attrs.field(default=0, validator=v.ge(0))

    @classmethod
    def parse(cls, text: str) -> Outage:
        """``"seconds=15,after=20"``."""
        return parse_fields(cls, text)


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
