"""EmulatorConfig: every knob of the emulator, validated when it is built."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ._faults import FaultSpec, check_route, parse_script_token

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "ImageMode"]

ImageMode = Literal["full", "tiny"]

DEFAULT_API_KEY = "emulator-key"


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


def _port(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65533:
        raise ValueError(f"{attribute.name} must be in [0, 65533], got {value!r}")


def _keys(value: Any) -> frozenset[str] | None:
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


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How the emulator behaves. Every field has a default that suits tests and demos.

    Task duration, in seconds of the event loop's clock::

        (task_base_seconds + step_seconds * steps * megapixels * image_num) / speed_factor
            * (1 +- task_jitter)

    so ``task_base_seconds=0`` (with the default ``step_seconds=0``) finishes tasks at once.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_port)
    """The API origin's port (0: a free one). The asset and image origins take the next two ports
    when ``port`` is set and they are free, else free ports."""

    seed: int | None = None
    """Seeds every random choice (faults, task failures, durations, drawn image seeds)."""

    api_keys: frozenset[str] | None = attrs.field(default=None, converter=_keys)
    """None: any bearer key is accepted. A set: other keys answer 403 INVALID_API_KEY."""

    allow_auth_on_assets: bool = False
    """False: an asset upload that carries ``Authorization`` is refused (400) and counted."""

    workers: int = attrs.field(default=64, validator=_positive)
    task_base_seconds: float = attrs.field(default=1.0, validator=_non_negative)
    step_seconds: float = attrs.field(default=0.0, validator=_non_negative)
    speed_factor: float = attrs.field(default=1.0, validator=_positive)
    task_jitter: float = attrs.field(default=0.0, validator=_fraction)
    task_failure_rate: float = attrs.field(default=0.0, validator=_fraction)
    """Fraction of tasks that end TASK_STATUS_FAILED (see also the ``[[fail]]`` prompt marker)."""

    eta_honest: bool = True
    """True: ``eta`` is the true remaining time. False: a seeded random lie in [0, 3x truth]."""

    image_url_ttl: int = attrs.field(default=3600, validator=_non_negative)
    image_mode: ImageMode = attrs.field(
        default="full", validator=attrs.validators.in_(("full", "tiny"))
    )
    image_size_bytes: int | None = attrs.field(default=None, validator=_positive)
    """Pad every served image to this many bytes (streamed, never held in memory): benchmarks."""

    max_asset_bytes: int = attrs.field(default=30 * 1024 * 1024, validator=_positive)

    rate_limit_per_second: float | None = attrs.field(default=None, validator=_positive)
    """Submissions per second per key (sliding one-second window)."""
    rate_limit_images_per_minute: int | None = attrs.field(default=None, validator=_positive)
    """Images (``image_num`` summed) per minute per key (sliding 60-second window)."""

    faults: Mapping[str, FaultSpec] = attrs.field(factory=dict, converter=_faults)
    """Initial fault specs per route; change them at run time with ``Emulator.faults``."""
    fault_scripts: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_scripts)
    """Initial scripted outcomes per route (see ``Faults.script``)."""

    shutdown_timeout: float = attrs.field(default=0.5, validator=_non_negative)
    """Seconds given to in-flight requests when the emulator closes."""
