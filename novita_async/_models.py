"""Typed models of the image API (the InstantID request and the v3 tasks' requests, task result,
model list, webhook event) and the attrs validators of their fields and of the client's options.

A request checks every documented range and enum (:mod:`._spec`) when built: a bad value is a
:class:`ValidationError` naming its path (``loras[1].strength``) before anything is sent. Answers
are parsed leniently by :mod:`._converter`, which imports this module, never the other way round.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self, TypeAlias, TypeVar

import attrs
from attrs import validators as av

from . import _spec
from ._exceptions import ConfigurationError, ValidationError

__all__ = [
    "TASKS",
    "TASK_NAMES",
    "ControlNet",
    "ControlNetUnit",
    "DebugInfo",
    "Embedding",
    "EnterprisePlan",
    "EventType",
    "Extra",
    "HiresFix",
    "IPAdapter",
    "ImageControlNet",
    "ImageControlNetUnit",
    "ImageTaskRequest",
    "Img2ImgRequest",
    "InpaintingRequest",
    "InputSlot",
    "InstantIDRequest",
    "LoRA",
    "Model",
    "ModelPage",
    "ModelType",
    "NSFWDetectionResult",
    "Refiner",
    "ResultImage",
    "ResultVideo",
    "Task",
    "TaskExtra",
    "TaskRequest",
    "TaskResult",
    "TaskStatus",
    "Txt2ImgRequest",
    "UpscaleRequest",
    "Webhook",
    "WebhookEvent",
    "WebhookTestMode",
    "endpoint_name",
    "with_images",
]  # fmt: skip

T = TypeVar("T")
logger = logging.getLogger("novita_async")

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


def _numeric(
    name: str, required: bool, table: Mapping[str, tuple[_spec.Range, bool]] = _spec.NUMERIC_FIELDS
) -> Validator:
    allowed, integer = table[name]
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

    task: ClassVar[str] = "instant-id"
    """The job file's ``task`` for this request type (a line without ``task`` is InstantID)."""
    endpoint: ClassVar[str] = "/v3/async/instant-id"

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

    @property
    def images_out(self) -> int:
        """How many images the task makes (``image_num``)."""
        return self.image_num


# --- the v3 image tasks: txt2img, img2img, inpainting, upscale ---------------------------------
# Wrapped bodies ``{"extra": {...}, "request": {...}}``; input images travel inline as bare base64
# in ``request.<name>_base64``. The models hold no base64: :meth:`ImageTaskRequest.body` takes the
# encoded inputs by name and places them, so nothing else (a repr, a log line, a fingerprint)
# ever sees them.

_V3_NUMERIC = {
    (name, required): _numeric(name, required, _spec.V3_NUMERIC_FIELDS)
    for name in _spec.V3_NUMERIC_FIELDS
    for required in (False, True)
}


def _v3_in_range(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _V3_NUMERIC[attribute.name, attribute.default is not None](instance, attribute, value)


def _sampler(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A non-empty name; one outside the documented list is sent as given, with a warning (the
    SD3 guide's ``FlowMatchEuler`` is not in it)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(attribute.name, value, "is required: a sampler name")
    if value not in _spec.SAMPLERS:
        logger.warning(
            "sampler_name %r is not one of the documented samplers; sent as given", value
        )


_bool_flag: Validator = _boolean


def _scale_factor(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    low, high = _spec.SCALE_FACTOR_MIN_EXCLUSIVE, _spec.SCALE_FACTOR_MAX
    allowed = f"must be a number greater than {low:g} and at most {high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(attribute.name, value, allowed)
    if not (low < value <= high):  # NaN fails too
        raise ValidationError(attribute.name, value, allowed)


def _at_most(count: int, what: str) -> Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...] | None) -> None:
        if value is not None and len(value) > count:
            raise ValidationError(attribute.name, f"{len(value)} {what}", f"at most {count} {what}")

    return check


def _v3_loras(_: object, attribute: attrs.Attribute[Any], value: tuple[LoRA, ...] | None) -> None:
    _at_most(_spec.MAX_LORAS, "LoRAs")(_, attribute, value)
    allowed, _integer = _spec.V3_NUMERIC_FIELDS["strength"]
    for index, lora in enumerate(value or ()):
        if lora.strength not in allowed:
            raise ValidationError(
                f"{attribute.name}[{index}].strength", lora.strength, f"must be in {allowed}"
            )


@attrs.frozen
class Embedding:
    """A textual inversion, by its ``sd_name_in_api``."""

    model_name: str = attrs.field(validator=_name)


@attrs.frozen(kw_only=True)
class HiresFix:
    """txt2img's second pass at a higher resolution."""

    target_width: int = attrs.field(validator=_v3_in_range)
    target_height: int = attrs.field(validator=_v3_in_range)
    strength: float = attrs.field(validator=_v3_in_range)
    upscaler: str | None = attrs.field(default=None, validator=_one_of(_spec.HIRES_UPSCALERS))


@attrs.frozen
class Refiner:
    """txt2img's SDXL refiner, switched to at ``switch_at`` of the steps."""

    switch_at: float = attrs.field(validator=_v3_in_range)


@attrs.frozen(kw_only=True)
class ImageControlNetUnit:
    """One ControlNet unit of img2img; its image is an input (``controlnet.units[i].image``)."""

    model_name: str = attrs.field(validator=_name)
    strength: float = attrs.field(validator=_v3_in_range)
    preprocessor: str | None = attrs.field(
        default=None, validator=_one_of(_spec.V3_CONTROLNET_PREPROCESSORS)
    )
    guidance_start: float | None = attrs.field(default=None, validator=_v3_in_range)
    guidance_end: float | None = attrs.field(default=None, validator=_v3_in_range)


def _image_units(value: object) -> tuple[ImageControlNetUnit, ...]:
    return _build_list(ImageControlNetUnit, value, "units") or ()


def _some_units(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValidationError(attribute.name, [], "must hold at least one unit")


@attrs.frozen
class ImageControlNet:
    units: tuple[ImageControlNetUnit, ...] = attrs.field(
        converter=_image_units, validator=_some_units
    )


@attrs.frozen(kw_only=True)
class IPAdapter:
    """img2img's IP-Adapter; its image is an input (``ip_adapters[i].image``)."""

    model_name: str = attrs.field(validator=_one_of(_spec.IP_ADAPTER_MODELS, required=True))
    strength: float = attrs.field(validator=_v3_in_range)


def _embeddings(value: object) -> tuple[Embedding, ...] | None:
    return _build_list(Embedding, value, "embeddings")


def _hires_fix(value: object) -> HiresFix | None:
    return _build(HiresFix, value, "hires_fix")


def _refiner(value: object) -> Refiner | None:
    return _build(Refiner, value, "refiner")


def _image_controlnet(value: object) -> ImageControlNet | None:
    return _build(ImageControlNet, value, "controlnet")


def _ip_adapters(value: object) -> tuple[IPAdapter, ...] | None:
    return _build_list(IPAdapter, value, "ip_adapters")


def _v3_extra(value: object) -> Extra | None:
    extra = _build(Extra, value, "extra")
    status = None if extra is None or extra.webhook is None else extra.webhook.test_mode
    if status is not None and status.return_task_status not in _spec.WEBHOOK_TEST_STATUSES:
        raise ValidationError(
            "extra.webhook.test_mode.return_task_status",
            status.return_task_status,
            "must be one of " + ", ".join(_spec.WEBHOOK_TEST_STATUSES),
        )
    return extra


@attrs.frozen
class InputSlot:
    """One named input image of a request type: ``name`` as a job file and :meth:`body` key it
    (``image``, ``mask_image``, ``controlnet.units[].image``, ``ip_adapters[].image``; ``[]``
    stands for each item's index), sent as ``request.<name>_base64``, within ``limits``."""

    name: str
    limits: _spec.InputLimits
    same_size_as: str | None = None

    @property
    def items(self) -> tuple[str, str] | None:
        """For a slot of each item of a list (``controlnet.units[].image``): the list's path and
        the item's field (``("controlnet.units", "image")``); None for a single input."""
        where, _, field = self.name.partition("[].")
        return (where, field) if field else None


_PART = re.compile(r"(\w+)(?:\[(\d+)\])?")


def _as_list(_: object, __: object, value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _omit_none(_: attrs.Attribute[Any], value: object) -> bool:
    return value is not None


class ImageTaskRequest:
    """What the four v3 image requests share: their task, endpoint, inputs and wrapped body."""

    task: ClassVar[str]
    """The job file's ``task`` key: ``txt2img``, ``img2img``, ``inpainting``, ``upscale``."""
    endpoint: ClassVar[str]
    """``POST`` path, such as ``/v3/async/txt2img``."""
    inputs: ClassVar[tuple[InputSlot, ...]] = ()
    extra: Extra | None

    def input_names(self) -> tuple[str, ...]:
        """The inputs this request needs, each ``[]`` replaced by the index of its item."""
        names: list[str] = []
        for slot in self.inputs:
            if slot.items is None:
                names.append(slot.name)
                continue
            where, field = slot.items
            items: Any = self
            for part in where.split("."):
                items = getattr(items, part, None) if items is not None else None
            names.extend(f"{where}[{i}].{field}" for i in range(len(items or ())))
        return tuple(names)

    def check_input_names(self, names: Iterable[str]) -> tuple[str, ...]:
        """:meth:`input_names`, once none of ``names`` is other than them
        (:class:`ValidationError` naming the first that is)."""
        needed = self.input_names()
        for name in names:
            if name not in needed:
                self.slot(name)  # an unknown name is refused as such
                raise ValidationError("images", name, f"this {self.task} request has no such input")
        return needed

    def slot(self, name: str) -> InputSlot:
        """The slot of an input name (``ip_adapters[0].image`` is ``ip_adapters[].image``)."""
        general = re.sub(r"\[\d+\]", "[]", name)
        for slot in self.inputs:
            if slot.name == general:
                return slot
        raise ValidationError("images", name, f"is not an input of {self.task}")

    def body(self, images: Mapping[str, str]) -> dict[str, Any]:
        """The JSON body: ``{"extra": {...}, "request": {...}}`` (``extra`` only if set), unset
        fields omitted, each input of :meth:`input_names` placed from ``images`` (its base64)."""
        needed = self.check_input_names(images)
        for name in needed:
            value = images.get(name)
            if not isinstance(value, str) or not value:
                shown = None if value is None else f"<{type(value).__name__}>"
                raise ValidationError(f"images[{name!r}]", shown, "is required: base64 text")
        request = attrs.asdict(
            self,  # type: ignore[arg-type]  # every subclass is an attrs class
            filter=lambda attribute, value: value is not None and attribute.name != "extra",
            value_serializer=_as_list,
        )
        body: dict[str, Any] = {"request": request}
        if self.extra is not None:
            body = {"extra": attrs.asdict(self.extra, filter=_omit_none), **body}
        return with_images(body, {name: images[name] for name in needed})

    def check_submittable(self) -> None:
        """Nothing to check: the inputs are checked when :meth:`body` places them."""

    @property
    def images_out(self) -> int:
        """How many images the task makes (``image_num``; upscale: one)."""
        count: int = getattr(self, "image_num", 1)
        return count

    @property
    def image_type(self) -> str:
        """The image type the answer will carry (the service's default is png)."""
        if self.extra is not None and self.extra.response_image_type:
            return self.extra.response_image_type
        return "png"

    @classmethod
    def from_dict(
        cls, fields: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
    ) -> Self:
        """The request of API-named ``fields`` over ``defaults`` (``extra`` merges key by key),
        or :class:`ValidationError` naming the first problem by its path; strict: an unknown key
        is refused."""
        if not isinstance(fields, Mapping):
            raise ValidationError(cls.__name__, fields, "must be an object")
        request = _build(cls, merge_fields(defaults or {}, fields), "")
        assert request is not None
        return request


@attrs.frozen(kw_only=True)
class _DiffusionRequest(ImageTaskRequest):
    """The fields txt2img, img2img and inpainting share."""

    model_name: str = attrs.field(validator=_name)
    prompt: str = attrs.field(validator=_text)
    negative_prompt: str | None = attrs.field(default=None, validator=_text)
    image_num: int = attrs.field(default=1, validator=_v3_in_range)
    steps: int = attrs.field(default=20, validator=_v3_in_range)
    guidance_scale: float = attrs.field(default=7.5, validator=_v3_in_range)
    sampler_name: str = attrs.field(default="Euler a", validator=_sampler)
    seed: int | None = attrs.field(default=None, validator=_v3_in_range)
    sd_vae: str | None = attrs.field(default=None, validator=av.optional(_name))
    clip_skip: int | None = attrs.field(default=None, validator=_v3_in_range)
    loras: tuple[LoRA, ...] | None = attrs.field(
        default=None, converter=_loras, validator=_v3_loras
    )
    embeddings: tuple[Embedding, ...] | None = attrs.field(
        default=None, converter=_embeddings, validator=_at_most(_spec.MAX_EMBEDDINGS, "embeddings")
    )
    extra: Extra | None = attrs.field(default=None, converter=_v3_extra)


@attrs.frozen(kw_only=True)
class Txt2ImgRequest(_DiffusionRequest):
    """The body of ``POST /v3/async/txt2img``. Fields the API requires and has no default for
    take the official SDK's (512x512, one image, 20 steps, guidance 7.5, ``Euler a``)."""

    task: ClassVar[str] = "txt2img"
    endpoint: ClassVar[str] = "/v3/async/txt2img"
    inputs: ClassVar[tuple[InputSlot, ...]] = ()

    width: int = attrs.field(default=512, validator=_v3_in_range)
    height: int = attrs.field(default=512, validator=_v3_in_range)
    hires_fix: HiresFix | None = attrs.field(default=None, converter=_hires_fix)
    refiner: Refiner | None = attrs.field(default=None, converter=_refiner)
    enable_transparent_background: bool | None = attrs.field(default=None, validator=_bool_flag)
    restore_faces: bool | None = attrs.field(default=None, validator=_bool_flag)

    def __attrs_post_init__(self) -> None:
        if self.enable_transparent_background and self.image_type != "png":
            raise ValidationError(
                "enable_transparent_background",
                True,
                "needs extra.response_image_type png",
            )


@attrs.frozen(kw_only=True)
class Img2ImgRequest(_DiffusionRequest):
    """The body of ``POST /v3/async/img2img``: ``image`` (10 MB, 16 MP), and one image per
    ControlNet unit and per IP-Adapter."""

    task: ClassVar[str] = "img2img"
    endpoint: ClassVar[str] = "/v3/async/img2img"
    inputs: ClassVar[tuple[InputSlot, ...]] = (
        InputSlot("image", _spec.IMG2IMG_INPUT),
        InputSlot("controlnet.units[].image", _spec.IMG2IMG_INPUT),
        InputSlot("ip_adapters[].image", _spec.IMG2IMG_INPUT),
    )

    width: int = attrs.field(default=512, validator=_v3_in_range)
    height: int = attrs.field(default=512, validator=_v3_in_range)
    strength: float | None = attrs.field(default=None, validator=_v3_in_range)
    controlnet: ImageControlNet | None = attrs.field(default=None, converter=_image_controlnet)
    ip_adapters: tuple[IPAdapter, ...] | None = attrs.field(
        default=None,
        converter=_ip_adapters,
        validator=_at_most(_spec.MAX_IP_ADAPTERS, "IP-Adapters"),
    )


@attrs.frozen(kw_only=True)
class InpaintingRequest(_DiffusionRequest):
    """The body of ``POST /v3/async/inpainting``: ``image`` and ``mask_image`` (30 MB, 16 MP,
    the mask of the image's resolution); the output has the input's size."""

    task: ClassVar[str] = "inpainting"
    endpoint: ClassVar[str] = "/v3/async/inpainting"
    inputs: ClassVar[tuple[InputSlot, ...]] = (
        InputSlot("image", _spec.INPAINTING_INPUT),
        InputSlot("mask_image", _spec.INPAINTING_INPUT, same_size_as="image"),
    )

    mask_blur: int | None = attrs.field(default=None, validator=_v3_in_range)
    strength: float | None = attrs.field(default=None, validator=_v3_in_range)
    inpainting_full_res: int | None = attrs.field(default=None, validator=_v3_in_range)
    inpainting_full_res_padding: int | None = attrs.field(default=None, validator=_v3_in_range)
    inpainting_mask_invert: int | None = attrs.field(default=None, validator=_v3_in_range)
    initial_noise_multiplier: float | None = attrs.field(default=None, validator=_v3_in_range)


@attrs.frozen(kw_only=True)
class UpscaleRequest(ImageTaskRequest):
    """The body of ``POST /v3/async/upscale``: ``image`` (30 MB, 2048x2048) times
    ``scale_factor`` (greater than 1, at most 4); one image out."""

    task: ClassVar[str] = "upscale"
    endpoint: ClassVar[str] = "/v3/async/upscale"
    inputs: ClassVar[tuple[InputSlot, ...]] = (InputSlot("image", _spec.UPSCALE_INPUT),)

    model_name: str = attrs.field(validator=_one_of(_spec.UPSCALE_MODELS, required=True))
    scale_factor: float = attrs.field(default=2.0, validator=_scale_factor)
    extra: Extra | None = attrs.field(default=None, converter=_v3_extra)


TASKS: Mapping[str, type[ImageTaskRequest]] = {
    cls.task: cls for cls in (Txt2ImgRequest, Img2ImgRequest, InpaintingRequest, UpscaleRequest)
}
"""The v3 image request types by their ``task`` name (a job line without ``task`` is InstantID)."""

TaskRequest: TypeAlias = InstantIDRequest | ImageTaskRequest
"""Any request the batch runner and :meth:`NovitaClient.submit` take."""

TASK_NAMES: tuple[str, ...] = (InstantIDRequest.task, *TASKS)
"""Every task a job line may name: ``instant-id`` (the default), then the v3 image tasks. A task's
name is also the last part of its endpoint's path."""


def endpoint_name(request: InstantIDRequest | ImageTaskRequest) -> str:
    """The last part of the request's endpoint path (``instant-id``, ``txt2img``, ...)."""
    return request.endpoint.rsplit("/", 1)[-1]


def with_images(body: Mapping[str, Any], images: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a wrapped ``body`` (:meth:`ImageTaskRequest.body`'s, with anything in place of
    the images) with each input of ``images`` (name to base64) placed, copying only the parts
    on the way to them: the template is not changed, and it never holds base64."""
    request = copy.copy(body["request"])
    for name in images:
        node: Any = request
        *parents, last = name.split(".")
        for part in parents:
            match = _PART.fullmatch(part)
            assert match is not None
            node[match[1]] = child = copy.copy(node[match[1]])
            if match[2] is not None:
                child[int(match[2])] = node = copy.copy(child[int(match[2])])
            else:
                node = child
        node[f"{last}_base64"] = images[name]
    return {**body, "request": request}


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
