"""Typed models of the InstantID API: the request, the task result and the model list.

Requests validate every documented range and enum when they are built (see :mod:`._spec`), so a bad
value raises :class:`ValidationError` naming the field before anything is sent. Answers are parsed
leniently by :data:`novita_async._converter.converter`, because the real service drifts (numbers as
strings, unknown statuses, missing lists).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from . import _spec
from . import _validators as v
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


# --- request ----------------------------------------------------------------------------------

# Nested parts of a request may be given as their model or as a mapping of their fields (as a
# job file has them); either way they are checked here, naming the path of a bad field.


def _units(value: object) -> tuple[ControlNetUnit, ...]:
    return v.nested_list(value, "units", ControlNetUnit) or ()


def _test_mode(value: object) -> WebhookTestMode | None:
    return v.nested(value, "test_mode", WebhookTestMode)


def _webhook(value: object) -> Webhook | None:
    return v.nested(value, "webhook", Webhook)


def _enterprise(value: object) -> EnterprisePlan | None:
    return v.nested(value, "enterprise_plan", EnterprisePlan)


def _loras(value: object) -> tuple[LoRA, ...] | None:
    return v.nested_list(value, "loras", LoRA)


def _controlnet(value: object) -> ControlNet | None:
    return v.nested(value, "controlnet", ControlNet)


def _extra(value: object) -> Extra | None:
    return v.nested(value, "extra", Extra)


@attrs.frozen
class LoRA:
    """One LoRA applied on top of the checkpoint."""

    model_name: str = attrs.field(validator=v.name)
    strength: float = attrs.field(validator=v.finite)


@attrs.frozen
class ControlNetUnit:
    model_name: str = attrs.field(validator=v.name)
    strength: float = attrs.field(validator=v.finite)
    preprocessor: str = attrs.field(validator=v.one_of(_spec.CONTROLNET_PREPROCESSORS))


@attrs.frozen
class ControlNet:
    units: tuple[ControlNetUnit, ...] = attrs.field(converter=_units)


@attrs.frozen
class WebhookTestMode:
    enabled: bool = attrs.field(validator=v.boolean)
    return_task_status: str | None = None


@attrs.frozen
class Webhook:
    url: str = attrs.field(validator=v.name)
    test_mode: WebhookTestMode | None = attrs.field(default=None, converter=_test_mode)


@attrs.frozen
class EnterprisePlan:
    enabled: bool = attrs.field(validator=v.boolean)


@attrs.frozen
class Extra:
    """The ``extra`` block shared by Novita's v3 async endpoints."""

    response_image_type: str | None = attrs.field(
        default=None, validator=v.one_of(_spec.IMAGE_TYPES)
    )
    enable_nsfw_detection: bool | None = attrs.field(default=None, validator=v.boolean)
    nsfw_detection_level: int | None = attrs.field(default=None, validator=v.in_range)
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

    prompt: str = attrs.field(validator=v.text)
    face_image_assets_ids: tuple[str, ...] = attrs.field(
        default=(), converter=v.str_tuple, validator=v.asset_ids
    )
    ref_image_assets_ids: tuple[str, ...] = attrs.field(
        default=(), converter=v.str_tuple, validator=v.asset_ids
    )
    model_name: str = attrs.field(default=_spec.RECOMMENDED_MODEL, validator=v.name)
    width: int = attrs.field(default=1024, validator=v.required_in_range)
    height: int = attrs.field(default=1024, validator=v.required_in_range)
    image_num: int = attrs.field(default=1, validator=v.required_in_range)
    steps: int = attrs.field(default=25, validator=v.required_in_range)
    guidance_scale: float = attrs.field(default=7.5, validator=v.required_in_range)
    sampler_name: str = attrs.field(
        default="Euler", validator=v.one_of(_spec.SAMPLERS, required=True)
    )
    negative_prompt: str | None = attrs.field(default=None, validator=v.text)
    seed: int | None = attrs.field(default=None, validator=v.in_range)
    id_strength: float | None = attrs.field(default=None, validator=v.in_range)
    adapter_strength: float | None = attrs.field(default=None, validator=v.in_range)
    clip_skip: int | None = attrs.field(default=None, validator=v.in_range)
    face_kps_assets_ids: tuple[str, ...] | None = attrs.field(
        default=None, converter=v.str_tuple, validator=v.asset_ids
    )
    control_guidance_start: float | None = attrs.field(default=None, validator=v.in_range)
    control_guidance_end: float | None = attrs.field(default=None, validator=v.in_range)
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
