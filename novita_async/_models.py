"""Typed models of the InstantID API (request, task result, model list, webhook event) and the
attrs validators of their fields and of the client's options.

A request checks every documented range and enum (:mod:`._spec`) when built: a bad value is a
:class:`ValidationError` naming its path (``loras[1].strength``) before anything is sent. Answers
are parsed leniently by :mod:`._converter`, which imports this module, never the other way round.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
from attrs import validators as av

from . import _spec
from ._exceptions import ConfigurationError, ValidationError

__all__ = [
    "ControlNet", "ControlNetUnit", "DebugInfo", "EnterprisePlan", "EventType", "Extra",
    "InstantIDRequest", "LoRA", "Model", "ModelPage", "ModelType", "NSFWDetectionResult",
    "ResultImage", "ResultVideo", "Task", "TaskExtra", "TaskResult", "TaskStatus", "Webhook",
    "WebhookEvent", "WebhookTestMode",
]  # fmt: skip

T = TypeVar("T")

# --- validators -------------------------------------------------------------------------------

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], Any]  # what attrs.field(validator=) takes


def raising(
    error: Callable[[Any, attrs.Attribute[Any], Any], Exception], *checks: Validator
) -> Validator:
    """``checks`` in turn, a failure raised as ``error(instance, attribute, value)`` (not attrs'
    bare ``TypeError``)."""
    check = av.and_(*checks)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(instance, attribute, value)
        except (TypeError, ValueError):
            raise error(instance, attribute, value) from None

    return validate


def refusing(allowed: str, *checks: Validator) -> Validator:
    """``checks`` for a request field: a failure is a :class:`ValidationError`."""
    return raising(
        lambda _, attribute, value: ValidationError(attribute.name, value, allowed), *checks
    )


def setting(requirement: str, *checks: Validator) -> Validator:
    """``checks`` for an option: a failure is a :class:`ConfigurationError` such as
    ``RetryPolicy.attempts must be an integer >= 1``."""

    def error(instance: Any, attribute: attrs.Attribute[Any], _: Any) -> Exception:
        return ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be {requirement}"
        )

    return raising(error, *checks)


# A bool is an int to Python, never a number to the API. (``not_(instance_of(bool))`` raises
# and catches an exception for every value that is fine.)
def _not_bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        raise TypeError(f"{attribute.name} must not be a bool")


NUMBER = (_not_bool, av.instance_of((int, float)))
INTEGER = (_not_bool, av.instance_of(int))
# Every comparison with NaN is false, so these bounds refuse it as well as the infinities.
FINITE = (av.gt(-math.inf), av.lt(math.inf))


def _none_or(check: Validator, required: str | None) -> Validator:
    """``check``, or None too unless the field is ``required`` (then refused as that says)."""
    if required is None:
        return av.optional(check)

    def refuse_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            raise ValidationError(attribute.name, value, required)

    return av.and_(refuse_none, check)


def _numeric(name: str, required: bool) -> Validator:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    bounds = [av.ge(allowed.low)] + ([] if allowed.high is None else [av.le(allowed.high)])
    check = av.and_(
        refusing(
            f"must be {'an integer' if integer else 'a number'} in {allowed}",
            *(INTEGER if integer else NUMBER),
        ),
        refusing(f"must be in {allowed}", *bounds),
    )
    return _none_or(check, f"required: a value in {allowed}" if required else None)


_NUMERIC = {
    (name, required): _numeric(name, required)
    for name in _spec.NUMERIC_FIELDS
    for required in (False, True)
}


# A numeric field with a default is one the API requires (None would drop it from the JSON).
def _in_range(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _NUMERIC[attribute.name, attribute.default is not None](instance, attribute, value)


_text: Validator = av.optional(
    av.and_(
        refusing("must be a string", av.instance_of(str)),
        refusing(
            f"length must be in {_spec.PROMPT_LENGTH} characters",
            av.min_len(int(_spec.PROMPT_LENGTH.low)),
            av.max_len(int(_spec.PROMPT_LENGTH.high or 0)),
        ),
    )
)

# Something besides whitespace.
_name: Validator = refusing(
    "must be a non-empty string", av.instance_of(str), av.matches_re(r"(?s).*\S.*")
)


def _one_of(choices: tuple[str, ...], *, required: bool = False) -> Validator:
    listed = ", ".join(choices)
    check = refusing("must be one of " + listed, av.in_(choices))
    return _none_or(check, "is required: one of " + listed if required else None)


_asset_ids: Validator = av.optional(
    refusing(
        "must be a list of non-empty asset ids",
        av.deep_iterable(av.and_(av.instance_of(str), av.min_len(1))),
    )
)
_finite: Validator = refusing("must be a finite number", *NUMBER, *FINITE)
_boolean: Validator = av.optional(refusing("must be true or false", av.instance_of(bool)))


def _str_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        # A bare string would otherwise become a tuple of characters.
        raise ValidationError("asset ids", value, "must be a list of asset ids, not a string")
    if not isinstance(value, Iterable):
        raise ValidationError("asset ids", value, "must be a list of asset ids")
    return tuple(value)


# --- building from fields ---------------------------------------------------------------------
# Nested parts of a request may be given as their model or as a mapping of their fields (as a
# job file has them). Each level names a problem relative to itself; its parent puts its own
# key in front.


def _path(key: str, field: str) -> str:
    """``field`` (a name, ``[index]`` or a path of them) under ``key``."""
    if not key or not field:
        return key or field
    return key + field if field.startswith("[") else f"{key}.{field}"


def _build(cls: type[T], value: object, path: str) -> T | None:
    """``value`` as a ``cls``: an instance kept, a mapping of its fields built strictly."""
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(path, value, f"must be an object: a {cls.__name__}'s fields")
    fields = {key: item for key, item in value.items() if item is not None}
    known = attrs.fields_dict(cls)  # type: ignore[arg-type]
    for key in fields:
        if key not in known:
            raise ValidationError(_path(path, str(key)), fields[key], "unknown field")
    for name, field in known.items():
        if field.default is attrs.NOTHING and name not in fields:
            raise ValidationError(_path(path, name), None, "is required")
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise ValidationError(_path(path, exc.field), exc.value, exc.allowed) from None


def _build_list(cls: type[T], value: object, path: str) -> tuple[T, ...] | None:
    """``value`` as a tuple of ``cls``, each item an instance or a mapping of its fields."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError(path, value, f"must be a list of {cls.__name__}")
    items = []
    for index, item in enumerate(value):
        if (built := _build(cls, item, f"{path}[{index}]")) is None:
            raise ValidationError(f"{path}[{index}]", item, f"must be a {cls.__name__}")
        items.append(built)
    return tuple(items)


def merge_fields(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` over ``defaults``; the ``extra`` blocks merge key by key, the rest replace."""
    merged = {**defaults, **fields}
    if isinstance(extra := fields.get("extra"), dict) and isinstance(defaults.get("extra"), dict):
        merged["extra"] = {**defaults["extra"], **extra}
    return merged


# --- request ----------------------------------------------------------------------------------


# The attrs converters of the nested parts (named functions: what mypy's attrs plugin reads).
def _units(value: object) -> tuple[ControlNetUnit, ...]:
    return _build_list(ControlNetUnit, value, "units") or ()


def _test_mode(value: object) -> WebhookTestMode | None:
    return _build(WebhookTestMode, value, "test_mode")


def _webhook(value: object) -> Webhook | None:
    return _build(Webhook, value, "webhook")


def _enterprise(value: object) -> EnterprisePlan | None:
    return _build(EnterprisePlan, value, "enterprise_plan")


def _loras(value: object) -> tuple[LoRA, ...] | None:
    return _build_list(LoRA, value, "loras")


def _controlnet(value: object) -> ControlNet | None:
    return _build(ControlNet, value, "controlnet")


def _extra(value: object) -> Extra | None:
    return _build(Extra, value, "extra")


@attrs.frozen
class LoRA:
    """One LoRA applied on top of the checkpoint."""

    model_name: str = attrs.field(validator=_name)
    strength: float = attrs.field(validator=_finite)


@attrs.frozen
class ControlNetUnit:
    model_name: str = attrs.field(validator=_name)
    strength: float = attrs.field(validator=_finite)
    preprocessor: str = attrs.field(validator=_one_of(_spec.CONTROLNET_PREPROCESSORS))


@attrs.frozen
class ControlNet:
    units: tuple[ControlNetUnit, ...] = attrs.field(converter=_units)


@attrs.frozen
class WebhookTestMode:
    enabled: bool = attrs.field(validator=_boolean)
    return_task_status: str | None = None


@attrs.frozen
class Webhook:
    url: str = attrs.field(validator=_name)
    test_mode: WebhookTestMode | None = attrs.field(default=None, converter=_test_mode)


@attrs.frozen
class EnterprisePlan:
    enabled: bool = attrs.field(validator=_boolean)


@attrs.frozen
class Extra:
    """The ``extra`` block shared by Novita's v3 async endpoints."""

    response_image_type: str | None = attrs.field(
        default=None, validator=_one_of(_spec.IMAGE_TYPES)
    )
    enable_nsfw_detection: bool | None = attrs.field(default=None, validator=_boolean)
    nsfw_detection_level: int | None = attrs.field(default=None, validator=_in_range)
    webhook: Webhook | None = attrs.field(default=None, converter=_webhook)
    custom_storage: dict[str, Any] | None = None
    enterprise_plan: EnterprisePlan | None = attrs.field(default=None, converter=_enterprise)


def _max_loras(_: object, attribute: attrs.Attribute[Any], value: tuple[LoRA, ...] | None) -> None:
    if value is not None and len(value) > _spec.MAX_LORAS:
        raise ValidationError(
            attribute.name, f"{len(value)} LoRAs", f"at most {_spec.MAX_LORAS} LoRAs"
        )


@attrs.frozen
class InstantIDRequest:
    """The body of ``POST /v3/async/instant-id``, field for field as the documentation names it.

    Fields the API requires have defaults (the recommended model, 1024x1024, one image, 25 steps,
    guidance 7.5, the ``Euler`` sampler), so ``InstantIDRequest(prompt=...,
    face_image_assets_ids=[...], ref_image_assets_ids=[...])`` is a complete request. Optional
    fields left as ``None`` are omitted from the JSON. The asset id lists may be left empty while a
    request is a template (the batch runner fills them after uploading); :meth:`check_submittable`
    insists on them.
    """

    prompt: str = attrs.field(validator=_text)
    face_image_assets_ids: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_asset_ids
    )
    ref_image_assets_ids: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_asset_ids
    )
    model_name: str = attrs.field(default=_spec.RECOMMENDED_MODEL, validator=_name)
    width: int = attrs.field(default=1024, validator=_in_range)
    height: int = attrs.field(default=1024, validator=_in_range)
    image_num: int = attrs.field(default=1, validator=_in_range)
    steps: int = attrs.field(default=25, validator=_in_range)
    guidance_scale: float = attrs.field(default=7.5, validator=_in_range)
    sampler_name: str = attrs.field(
        default="Euler", validator=_one_of(_spec.SAMPLERS, required=True)
    )
    negative_prompt: str | None = attrs.field(default=None, validator=_text)
    seed: int | None = attrs.field(default=None, validator=_in_range)
    id_strength: float | None = attrs.field(default=None, validator=_in_range)
    adapter_strength: float | None = attrs.field(default=None, validator=_in_range)
    clip_skip: int | None = attrs.field(default=None, validator=_in_range)
    face_kps_assets_ids: tuple[str, ...] | None = attrs.field(
        default=None, converter=_str_tuple, validator=_asset_ids
    )
    control_guidance_start: float | None = attrs.field(default=None, validator=_in_range)
    control_guidance_end: float | None = attrs.field(default=None, validator=_in_range)
    loras: tuple[LoRA, ...] | None = attrs.field(
        default=None, converter=_loras, validator=_max_loras
    )
    controlnet: ControlNet | None = attrs.field(default=None, converter=_controlnet)
    extra: Extra | None = attrs.field(default=None, converter=_extra)

    def __attrs_post_init__(self) -> None:
        if self.face_image_assets_ids:
            self._check_kps()

    def _check_kps(self) -> None:
        kps, faces = self.face_kps_assets_ids, self.face_image_assets_ids
        if kps is not None and len(kps) != len(faces):
            raise ValidationError(
                "face_kps_assets_ids",
                f"{len(kps)} ids",
                f"must have as many ids as face_image_assets_ids ({len(faces)})",
            )

    @classmethod
    def from_dict(
        cls, fields: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
    ) -> InstantIDRequest:
        """The request of API-named ``fields`` over ``defaults`` (whose ``extra`` block merges
        key by key), or :class:`ValidationError` naming the first problem by its path
        (``loras[1].strength``, ``extra.webhook.urll``): strict, an unknown key is refused."""
        if not isinstance(fields, Mapping):
            raise ValidationError(cls.__name__, fields, "must be an object")
        request = _build(cls, merge_fields(defaults or {}, fields), "")
        assert request is not None
        return request

    def check_submittable(self) -> None:
        """Raise :class:`ValidationError` unless the request can be sent as it is."""
        for name in ("face_image_assets_ids", "ref_image_assets_ids"):
            if not getattr(self, name):
                raise ValidationError(name, [], "must hold at least one asset id")
        self._check_kps()

    @property
    def image_type(self) -> str:
        """The image type the answer will carry (the service's default is png)."""
        if self.extra is not None and self.extra.response_image_type:
            return self.extra.response_image_type
        return "png"


# --- task result ------------------------------------------------------------------------------


class TaskStatus(enum.StrEnum):
    """A task's status; anything the service adds later parses as ``UNKNOWN``."""

    QUEUED = _spec.STATUS_QUEUED
    PROCESSING = _spec.STATUS_PROCESSING
    SUCCEED = _spec.STATUS_SUCCEED
    FAILED = _spec.STATUS_FAILED
    UNKNOWN = "TASK_STATUS_UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED)


@attrs.frozen
class Task:
    task_id: str
    status: TaskStatus = TaskStatus.UNKNOWN
    task_type: str = ""
    reason: str = ""
    eta: float | None = None
    progress_percent: float | None = None


@attrs.frozen
class NSFWDetectionResult:
    valid: bool | None = None
    confidence: float | None = None


@attrs.frozen
class ResultImage:
    image_url: str
    image_url_ttl: int | None = None
    image_type: str = ""
    nsfw_detection_result: NSFWDetectionResult | None = None


@attrs.frozen
class ResultVideo:
    video_url: str
    video_url_ttl: int | None = None
    video_type: str = ""


@attrs.frozen
class DebugInfo:
    request_info: str = ""
    submit_time_ms: int | None = None
    execute_time_ms: int | None = None
    complete_time_ms: int | None = None


@attrs.frozen
class TaskExtra:
    seed: int | None = None
    enable_nsfw_detection: bool | None = None
    debug_info: DebugInfo | None = None


@attrs.frozen
class TaskResult:
    """The answer of ``GET /v3/async/task-result``."""

    task: Task
    images: tuple[ResultImage, ...] = ()
    videos: tuple[ResultVideo, ...] = ()
    extra: TaskExtra = TaskExtra()

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def status(self) -> TaskStatus:
        return self.task.status


# --- webhook event ---------------------------------------------------------------------------
# The service POSTs ``{"event_type": "ASYNC_TASK_RESULT", "payload": {...}}`` when a task ends, the
# payload shaped as a task-result answer; the converter parses it into the same TaskResult.


class EventType(enum.StrEnum):
    """The kinds of event this package knows; any other ``event_type`` is ``UNKNOWN``."""

    ASYNC_TASK_RESULT = "ASYNC_TASK_RESULT"
    """A task ended; the event's ``result`` is its task result."""
    UNKNOWN = "UNKNOWN"


_KNOWN_EVENTS = {kind.value: kind for kind in EventType if kind is not EventType.UNKNOWN}


@attrs.frozen
class WebhookEvent:
    """One webhook: its ``event_type`` as sent and, for ``ASYNC_TASK_RESULT``, the task's result."""

    event_type: str = attrs.field(validator=av.instance_of(str))
    result: TaskResult | None = attrs.field(
        default=None, validator=av.optional(av.instance_of(TaskResult))
    )

    def __attrs_post_init__(self) -> None:
        if self.is_task_result and self.result is None:
            raise ValidationError("result", None, "is required for an ASYNC_TASK_RESULT event")

    @property
    def kind(self) -> EventType:
        """``event_type`` as an :class:`EventType`: ``UNKNOWN`` for a type this package lacks."""
        return _KNOWN_EVENTS.get(self.event_type, EventType.UNKNOWN)

    @property
    def is_task_result(self) -> bool:
        return self.kind is EventType.ASYNC_TASK_RESULT

    @property
    def task_id(self) -> str | None:
        return None if self.result is None else self.result.task_id


# --- model list -------------------------------------------------------------------------------


@attrs.frozen
class ModelType:
    name: str = ""
    display_name: str = ""


@attrs.frozen
class Model:
    """One entry of ``GET /v3/model``; ``sd_name`` is what ``model_name`` fields take."""

    sd_name: str
    id: int | None = None
    name: str = ""
    type: ModelType | None = None
    base_model: str = ""
    base_model_type: str = ""
    is_sdxl: bool | None = None
    is_inpainting: bool | None = None
    tags: tuple[str, ...] = ()
    cover_url: str = ""
    status: int | None = None
    source: str = ""
    visibility: str = ""


@attrs.frozen
class ModelPage:
    models: tuple[Model, ...] = ()
    next_cursor: str = ""
