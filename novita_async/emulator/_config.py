"""EmulatorConfig: every knob of the emulator, validated when it is built.

Each field also says how the command line sets it (its :class:`Flag`): ``python -m
novita_async.emulator`` derives its options, their types and their defaults from these fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
from attrs import validators as v

from .. import _spec
from ._fault_specs import (
    ROUTES,
    SUBMIT_ROUTES,
    AccountError,
    FaultSpec,
    Outage,
    check_route,
    parse_script_token,
)
from ._webhook_faults import WebhookFaultSpec, parse_webhook_token

__all__ = [
    "DEFAULT_API_KEY",
    "DOCUMENTED_IMAGES_PER_MINUTE",
    "IMAGE_COSTS",
    "AssetErrors",
    "EmulatorConfig",
    "Flag",
    "ImageMode",
]

ImageMode = Literal["full", "tiny"]
AssetErrors = Literal["named", "plain"]

DEFAULT_API_KEY = "emulator-key"

DOCUMENTED_IMAGES_PER_MINUTE: Mapping[str, int] = _spec.V3_DEFAULT_IMAGES_PER_MINUTE
"""The service's documented default limits of the v3 image tasks, in images per minute per account
(``EmulatorConfig(route_images_per_minute=DOCUMENTED_IMAGES_PER_MINUTE)``, ``--route-limit
documented``). InstantID's is not documented."""

IMAGE_COSTS: Mapping[str, int] = {
    "submit": 5,
    "txt2img": 15,
    "img2img": 15,
    "inpainting": 15,
    "upscale": 20,
}
"""What one image of each submission route costs, in 1/10,000 USD: the emulator's own figures,
not the service's prices (InstantID's is low so that a long benchmark never spends the default
balance)."""


@attrs.frozen
class Flag:
    """The command-line flag of a configuration field (``--task-seconds`` for
    ``task_base_seconds``); without ``name`` it is the field's name with dashes."""

    help: str
    name: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    """Text to value, when the field's type does not say (a mapping's flag gives key and value)."""


def _flag(
    help: str,
    name: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> dict[str, Flag]:
    return {"flag": Flag(help, name, metavar, parse)}


def _route_and(parse: Callable[[str], Any]) -> Callable[[str], tuple[str, Any]]:
    def parse_route_value(text: str) -> tuple[str, Any]:
        route, sep, value = text.partition(":")
        if not sep or route not in ROUTES:
            raise ValueError(
                f"expected ROUTE:..., with ROUTE one of {', '.join(ROUTES)}; got {text!r}"
            )
        return route, parse(value)

    return parse_route_value


def _route_numbers(what: str, documented: Mapping[str, int] | None = None) -> Callable[[str], Any]:
    def parse_route_numbers(text: str) -> dict[str, int]:
        if documented is not None and text.strip() == "documented":
            return dict(documented)
        numbers = {}
        for item in text.split(","):
            route, sep, value = item.strip().partition("=")
            if not sep or route not in SUBMIT_ROUTES:
                raise ValueError(
                    f"expected ROUTE={what},..., with ROUTE one of {', '.join(SUBMIT_ROUTES)}; "
                    f"got {item.strip()!r}"
                )
            numbers[route] = int(value)
        return numbers

    return parse_route_numbers


def _numbers_by_route(value: Mapping[str, int] | None, least: int) -> Mapping[str, int]:
    numbers = dict(value or {})
    for route, number in numbers.items():
        if route not in SUBMIT_ROUTES:
            raise ValueError(
                f"unknown submission route {route!r}; routes are: {', '.join(SUBMIT_ROUTES)}"
            )
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{route}: expected an integer, got {number!r}")
        if number < least:
            raise ValueError(f"{route}: must be >= {least}, got {number}")
    return numbers


def _costs(value: Mapping[str, int] | None) -> Mapping[str, int]:
    return _numbers_by_route(value, 0)


def _limits(value: Mapping[str, int] | None) -> Mapping[str, int]:
    return _numbers_by_route(value, 1)


def _outcomes(text: str) -> tuple[str, ...]:
    return tuple(token for token in text.split(",") if token.strip())


def _keys(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _faults(value: Mapping[str, FaultSpec] | None) -> Mapping[str, FaultSpec]:
    faults = dict(value or {})
    for route in faults:
        check_route(route)
    return faults


def _scripts(value: Mapping[str, Iterable[str]] | None) -> Mapping[str, tuple[str, ...]]:
    scripts = {route: tuple(outcomes) for route, outcomes in (value or {}).items()}
    for route, outcomes in scripts.items():
        check_route(route)
        for token in outcomes:
            parse_script_token(token)  # fail at configuration time, not on the first request
    return scripts


def _webhook_script(value: Iterable[str]) -> tuple[str, ...]:
    script = tuple(value)
    for token in script:
        parse_webhook_token(token)
    return script


_FAULT_NAMES = ", ".join(field.name for field in attrs.fields(FaultSpec))
_fraction = v.and_(v.ge(0.0), v.le(1.0))


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How the emulator behaves. Every field has a default that suits tests and demos.

    Task duration, in seconds of the event loop's clock::

        (task_base_seconds + step_seconds * steps * megapixels * image_num) / speed_factor
            * (1 +- task_jitter)

    so ``task_base_seconds=0`` (with the default ``step_seconds=0``) finishes tasks at once.
    """

    host: str = attrs.field(
        default="127.0.0.1", metadata=_flag("interface to listen on", metavar="HOST")
    )
    port: int = attrs.field(
        default=0,
        validator=[v.ge(0), v.le(65533)],
        metadata=_flag("the API's port (0: a free one); assets and images take the next two"),
    )
    """The API origin's port (0: a free one). The asset and image origins take the next two ports
    when ``port`` is set and they are free, else free ports."""

    seed: int | None = attrs.field(
        default=None, metadata=_flag("seed every random choice, for reproducible runs")
    )
    """Seeds every random choice (faults, task failures, durations, drawn image seeds)."""

    api_keys: frozenset[str] | None = attrs.field(
        default=None,
        converter=_keys,
        metadata=_flag("accept only this key (repeatable; default: any)", "--api-key", "KEY"),
    )
    """None: any bearer key is accepted. A set: other keys answer 403 INVALID_API_KEY."""

    allow_auth_on_assets: bool = attrs.field(
        default=False, metadata=_flag("accept asset uploads that carry Authorization")
    )
    """False: an asset upload that carries ``Authorization`` is refused (400) and counted."""

    workers: int = attrs.field(
        default=64, validator=v.gt(0), metadata=_flag("tasks processed at once")
    )
    task_base_seconds: float = attrs.field(
        default=1.0,
        validator=v.ge(0.0),
        metadata=_flag("base duration of a task in seconds", "--task-seconds"),
    )
    step_seconds: float = attrs.field(
        default=0.0,
        validator=v.ge(0.0),
        metadata=_flag("extra seconds per step per megapixel per image"),
    )
    speed_factor: float = attrs.field(
        default=1.0, validator=v.gt(0.0), metadata=_flag("divide every task duration by this")
    )
    task_jitter: float = attrs.field(
        default=0.0, validator=_fraction, metadata=_flag("relative jitter of durations, 0..1")
    )
    task_failure_rate: float = attrs.field(
        default=0.0,
        validator=_fraction,
        metadata=_flag("fraction of tasks that fail, 0..1", "--failure-rate"),
    )
    """Fraction of tasks that end TASK_STATUS_FAILED (see also the ``[[fail]]`` prompt marker)."""

    eta_honest: bool = attrs.field(
        default=True,
        metadata=_flag("report random etas instead of true ones", "--dishonest-eta"),
    )
    """True: ``eta`` is the true remaining time. False: a seeded random lie in [0, 3x truth]."""

    drifted_model_flags: bool = attrs.field(
        default=False,
        metadata=_flag(
            "send the model listing's is_sdxl as text (true, FALSE, 1, 0...) and is_inpainting "
            "as 'unknown', as a drifting service might"
        ),
    )
    """True: the model listing's booleans arrive as a drifting service might send them: each
    ``is_sdxl`` as text in one of several spellings, each ``is_inpainting`` as ``"unknown"``."""

    image_url_ttl: int = attrs.field(
        default=3600, validator=v.ge(0), metadata=_flag("lifetime of image URLs in seconds")
    )
    image_mode: ImageMode = attrs.field(
        default="full",
        validator=v.in_(("full", "tiny")),
        metadata=_flag("full: pictures showing face, ref and prompt; tiny: flat, cached"),
    )
    image_size_bytes: int | None = attrs.field(
        default=None,
        validator=v.optional(v.gt(0)),
        metadata=_flag("pad every image to this many bytes, streamed"),
    )
    """Pad every served image to this many bytes (streamed, never held in memory): benchmarks."""

    max_asset_bytes: int = attrs.field(
        default=30 * 1024 * 1024, validator=v.gt(0), metadata=_flag("largest asset upload")
    )
    asset_ttl: float | None = attrs.field(
        default=None,
        validator=v.optional(v.ge(0.0)),
        metadata=_flag("forget each asset this many seconds after its upload", metavar="SECONDS"),
    )
    """Seconds an uploaded asset stays known (None: for good). The real service documents no
    lifetime, so a client must not rely on one either way."""
    asset_errors: AssetErrors = attrs.field(
        default="named",
        validator=v.in_(("named", "plain")),
        metadata=_flag(
            "how a submission naming an unknown asset is refused: named (400 naming the field "
            "and the id) or plain (400 INVALID_REQUEST_BODY with a message only, as the real "
            "service may answer)"
        ),
    )
    """``named``: 400 ``INVALID_REQUEST_BODY`` whose message names the id and whose metadata names
    the field (a helpful diagnosis). ``plain``: 400 ``INVALID_REQUEST_BODY`` with a generic
    message and no metadata at all: the real service documents no error for an asset it no longer
    knows, so a client must cope without being told which id it was."""

    legacy_task_answer: bool = attrs.field(
        default=False,
        metadata=_flag(
            "answer txt2img/img2img/inpainting/upscale submissions in the old shape "
            '{"code": 0, "msg": "", "data": {"task_id": ...}}'
        ),
    )
    """True: the v3 image tasks (not InstantID) answer a submission as several doc examples show,
    ``{"code": 0, "msg": "", "data": {"task_id": ...}}``, instead of ``{"task_id": ...}``."""
    credit_balance: int = attrs.field(
        default=1_000_000,
        validator=v.ge(0),
        metadata=_flag(
            "the account's balance at the start, in 1/10,000 USD (GET /v3/user's "
            "credit_balance); each task created spends its images' --image-cost",
            metavar="UNITS",
        ),
    )
    """The account's balance at the start, in units of 1/10,000 USD (10,000 = $1.00; the default
    1,000,000 is $100), as ``GET /v3/user`` answers it (``credit_balance``). Each task created
    spends ``image_costs[route] * image_num``; a submission the balance cannot pay (or any, once
    it is zero) answers 400 ``BILLING_BALANCE_NOT_ENOUGH``, as the account error does."""
    image_costs: Mapping[str, int] = attrs.field(
        factory=lambda: dict(IMAGE_COSTS),
        converter=_costs,
        metadata=_flag(
            "what one image of a submission route costs, in 1/10,000 USD, e.g. txt2img=15 "
            f"(routes: {', '.join(SUBMIT_ROUTES)}; submit is InstantID; repeatable; a route "
            "not named keeps its default)",
            "--image-cost",
            "ROUTE=UNITS,...",
            _route_numbers("UNITS"),
        ),
    )
    """Per submission route (``submit`` for InstantID, ``txt2img``...), what one image costs in
    1/10,000 USD; a route not named costs nothing. The default, :data:`IMAGE_COSTS`, is the
    emulator's own figures, not the service's prices. ``--image-cost`` replaces the named
    routes' costs and keeps the others'."""

    rate_limit_per_second: float | None = attrs.field(
        default=None,
        validator=v.optional(v.gt(0.0)),
        metadata=_flag("submissions per second per key before 429", "--rate-limit", "PER_SECOND"),
    )
    """Submissions per second per key (sliding one-second window)."""
    rate_limit_images_per_minute: int | None = attrs.field(
        default=None,
        validator=v.optional(v.gt(0)),
        metadata=_flag("images per minute per key before 429", "--images-per-minute"),
    )
    """Images (``image_num`` summed) per minute per key and per submission route (sliding
    60-second window), for the routes ``route_images_per_minute`` does not name."""
    route_images_per_minute: Mapping[str, int] = attrs.field(
        factory=dict,
        converter=_limits,
        metadata=_flag(
            "images per minute per key on one submission route before 429, e.g. txt2img=40 "
            "(repeatable); 'documented' sets the documented defaults: txt2img and upscale 20, "
            "img2img and inpainting 10",
            "--route-limit",
            "ROUTE=N,...",
            _route_numbers("N", DOCUMENTED_IMAGES_PER_MINUTE),
        ),
    )
    """Images per minute per key on each named submission route (sliding 60-second window), as
    the service limits each endpoint on its own: :data:`DOCUMENTED_IMAGES_PER_MINUTE` gives its
    documented defaults (an account may have higher ones). Empty by default: no route limit; a
    route not named keeps ``rate_limit_images_per_minute``."""

    faults: Mapping[str, FaultSpec] = attrs.field(
        factory=dict,
        converter=_faults,
        metadata=_flag(
            "fault spec of a route, e.g. submit:error_5xx=0.05,reset_before=0.02 (routes: "
            f"{', '.join(ROUTES)}; names: {_FAULT_NAMES})",
            "--fault",
            "ROUTE:NAME=VALUE,...",
            _route_and(FaultSpec.parse),
        ),
    )
    """Initial fault specs per route; change them at run time with ``Emulator.faults``."""
    fault_scripts: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict,
        converter=_scripts,
        metadata=_flag(
            "outcomes of the next requests to a route, e.g. submit:500,429,reset_after,ok",
            "--script",
            "ROUTE:OUTCOME,...",
            _route_and(_outcomes),
        ),
    )
    """Initial scripted outcomes per route (see ``Faults.script``)."""

    account_error: AccountError | None = attrs.field(
        default=None,
        metadata=_flag(
            "refuse the account after N tasks, e.g. after=20 (400 BILLING_BALANCE_NOT_ENOUGH) or "
            "after=0,status=403,reason=INVALID_API_KEY,routes=submit+result+models",
            metavar="NAME=VALUE,...",
            parse=AccountError.parse,
        ),
    )
    """An account error from the start (see ``Faults.account_error``)."""
    outage: Outage | None = attrs.field(
        default=None,
        metadata=_flag(
            "refuse connections to the API for SECONDS, at once or on the first request after "
            "N tasks: seconds=15,after=20",
            metavar="NAME=VALUE,...",
            parse=Outage.parse,
        ),
    )
    """An outage of the API origin (see ``Faults.outage``)."""

    webhook_timeout: float = attrs.field(
        default=5.0,
        validator=v.gt(0.0),
        metadata=_flag("seconds a webhook receiver has to answer before the attempt fails"),
    )
    """Seconds a webhook receiver has to answer an attempt (5, as documented)."""
    webhook_backoff_scale: float = attrs.field(
        default=1.0,
        validator=v.ge(0.0),
        metadata=_flag("multiply the webhook retry backoff (1, 2, 4, 8, 16 s) by this"),
    )
    """A failed webhook attempt is retried up to 5 times, after 1, 2, 4, 8 and 16 seconds times
    this (0.01 in tests)."""
    webhook_faults: WebhookFaultSpec | None = attrs.field(
        default=None,
        metadata=_flag(
            "faults of webhook events, e.g. drop=0.1,delay=0.2,jitter=0.1 (names: drop, "
            "duplicate, out_of_order, delay, jitter, hold_seconds)",
            metavar="NAME=VALUE,...",
            parse=WebhookFaultSpec.parse,
        ),
    )
    """Initial webhook faults (see ``Faults.webhooks``)."""
    webhook_script: tuple[str, ...] = attrs.field(
        default=(),
        converter=_webhook_script,
        metadata=_flag(
            "outcomes of the next webhook events, e.g. drop,duplicate,out_of_order,delay:2,ok",
            metavar="OUTCOME,...",
            parse=_outcomes,
        ),
    )
    """Initial scripted outcomes of webhook events (see ``WebhookFaults.script``)."""

    shutdown_timeout: float = attrs.field(
        default=0.5,
        validator=v.ge(0.0),
        metadata=_flag("seconds given to requests in flight when the emulator stops"),
    )
    """Seconds given to in-flight requests when the emulator closes."""
