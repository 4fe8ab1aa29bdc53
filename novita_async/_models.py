"""Typed models of the InstantID API: the request, the task result and the model list.

Requests validate every documented range and enum when they are built (see :mod:`._spec`), so a bad
value raises :class:`ValidationError` naming the field before anything is sent. Answers are parsed
leniently by :data:`novita_async._converter.converter`, because the real service drifts (numbers as
strings, unknown statuses, missing lists).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any

import attrs

from . import _spec
from ._exceptions import ValidationError

__all__ = [
    "ControlNet",
    "ControlNetUnit",
    "DebugInfo",
    "EnterprisePlan",
    "Extra",
    "InstantIDRequest",
    "LoRA",
    "Model",
    "ModelPage",
    "ModelType",
    "NSFWDetectionResult",
    "ResultImage",
    "ResultVideo",
    "Task",
    "TaskExtra",
    "TaskResult",
    "TaskStatus",
    "Webhook",
    "WebhookTestMode",
]


# --- validators -------------------------------------------------------------------------------


def _check_number(name: str, value: object) -> None:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ValidationError(name, value, f"must be {kind} in {allowed}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(name, value, f"must be a finite number in {allowed}")
    if value not in allowed:
        raise ValidationError(name, value, f"must be in {allowed}")


def _in_range(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Check a numeric field against the documented range for a field of the same name."""
    if value is not None:
        _check_number(attribute.name, value)


def _text(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(attribute.name, value, "must be a string")
    if len(value) not in _spec.PROMPT_LENGTH:
        raise ValidationError(
            attribute.name, value, f"length must be in {_spec.PROMPT_LENGTH} characters"
        )


def _name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(attribute.name, value, "must be a non-empty string")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in choices:
            raise ValidationError(attribute.name, value, "must be one of " + ", ".join(choices))

    return check


def _asset_ids(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    for item in value:  # type: ignore[attr-defined]
        if not isinstance(item, str) or not item:
            raise ValidationError(attribute.name, value, "must be a list of non-empty asset ids")


def _finite(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(attribute.name, value, "must be a finite number")


def _bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "must be true or false")


def _str_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        # A bare string would otherwise become a tuple of characters.
        raise ValidationError("asset ids", value, "must be a list of asset ids, not a string")
    return tuple(value)


def _tuple(value: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


# --- request ----------------------------------------------------------------------------------


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
    units: tuple[ControlNetUnit, ...] = attrs.field(converter=tuple)


@attrs.frozen
class WebhookTestMode:
    enabled: bool = attrs.field(validator=_bool)
    return_task_status: str | None = None


@attrs.frozen
class Webhook:
    url: str = attrs.field(validator=_name)
    test_mode: WebhookTestMode | None = None


@attrs.frozen
class EnterprisePlan:
    enabled: bool = attrs.field(validator=_bool)


@attrs.frozen
class Extra:
    """The ``extra`` block shared by Novita's v3 async endpoints."""

    response_image_type: str | None = attrs.field(
        default=None, validator=_one_of(_spec.IMAGE_TYPES)
    )
    enable_nsfw_detection: bool | None = attrs.field(default=None, validator=_bool)
    nsfw_detection_level: int | None = attrs.field(default=None, validator=_in_range)
    webhook: Webhook | None = None
    custom_storage: dict[str, Any] | None = None
    enterprise_plan: EnterprisePlan | None = None


def _loras(_: object, attribute: attrs.Attribute[Any], value: tuple[LoRA, ...] | None) -> None:
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
    sampler_name: str = attrs.field(default="Euler", validator=_one_of(_spec.SAMPLERS))
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
    loras: tuple[LoRA, ...] | None = attrs.field(default=None, converter=_tuple, validator=_loras)
    controlnet: ControlNet | None = None
    extra: Extra | None = None

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
