"""Validation of the wrapped v3 image tasks: ``POST /v3/async/`` txt2img, img2img, inpainting,
upscale.

Every field, range and enum of ``api-facts-v3.md`` sections 1-5 is checked on the raw JSON, with
the client's own table (:mod:`.._spec`: ranges, enums, input limits) where it has the figure.
The body must be wrapped (``{"extra": {...}, "request": {...}}``). Input images are bare base64
(a ``data:`` URI is refused), decoded and measured against the endpoint's limits (decoded bytes,
in MiB; pixels, 16 MP being 4096 x 4096; upscale: each side at most 2048). Fields the emulator
does not know are not refused (as the service ignores them) but collected by their path, to be
counted per route. The sampler enum is not closed (the SD3 guide uses ``FlowMatchEuler``): any
non-empty name passes.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from typing import Any

import attrs
from PIL import Image

from .. import _spec
from ._fault_specs import V3_ROUTES
from ._responses import APIProblem
from ._validation import INVALID_REQUEST_BODY, check_webhook, invalid

__all__ = [
    "TASK_ROUTES",
    "TASK_TYPES",
    "V3Submission",
    "validate_v3",
]

TASK_ROUTES = V3_ROUTES
"""The route names (and path tails) of the wrapped image tasks."""
TASK_TYPES = {
    "txt2img": "TXT_TO_IMG",
    "img2img": "IMG_TO_IMG",
    "inpainting": "INPAINTING",
    "upscale": "UPSCALE",
}
"""``task.task_type`` of each route's results (inpainting's is n/d: ``INPAINTING`` here)."""

MIB = 1024 * 1024
# The contract the client checks against, enforced here on the wire: one table for both.
IMAGE_LIMITS: dict[str, _spec.InputLimits] = {
    "img2img": _spec.IMG2IMG_INPUT,
    "inpainting": _spec.INPAINTING_INPUT,
    "upscale": _spec.UPSCALE_INPUT,
}
"""Per route, what an input image may be (decoded bytes, pixels, each side)."""

_EXTRA_KEYS = {
    "response_image_type",
    "enable_nsfw_detection",
    "nsfw_detection_level",
    "webhook",
    "custom_storage",
    "enterprise_plan",
}
_COMMON = {
    "model_name",
    "prompt",
    "negative_prompt",
    "image_num",
    "steps",
    "guidance_scale",
    "sampler_name",
    "seed",
    "sd_vae",
    "clip_skip",
    "loras",
    "embeddings",
}
REQUEST_KEYS: dict[str, set[str]] = {
    "txt2img": _COMMON
    | {
        "width",
        "height",
        "hires_fix",
        "refiner",
        "enable_transparent_background",
        "restore_faces",
    },
    # The migration guide maps sd_refiner to request.refiner for img2img too.
    "img2img": _COMMON
    | {"width", "height", "image_base64", "strength", "controlnet", "ip_adapters", "refiner"},
    "inpainting": _COMMON
    | {
        "image_base64",
        "mask_image_base64",
        "mask_blur",
        "strength",
        "inpainting_full_res",
        "inpainting_full_res_padding",
        "inpainting_mask_invert",
        "initial_noise_multiplier",
    },
    "upscale": {"model_name", "image_base64", "scale_factor"},
}


@attrs.frozen
class V3Submission:
    """A valid submission, as the task board needs it."""

    route: str
    body: dict[str, Any]
    """The task's body: the request's fields flat (every input image dropped, nested ones too)
    plus ``extra``, with the output ``width``/``height``, ``image_num``, ``steps`` and ``prompt``
    always present."""
    inputs: tuple[bytes, ...]
    """The decoded input image (and mask), to draw into the results."""
    unknown: tuple[str, ...]
    """Paths of fields the emulator does not know, e.g. ``request.cfg_scale``."""
    same_as: dict[str, Any]
    """What makes two submissions the same: the body as sent, each inline image replaced by its
    length and its string hash (equal strings, equal stand-ins; hashing tens of MB of canonical
    JSON for every submission would cost more than the validation)."""


class _Checker:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def keys(self, obj: dict[str, Any], known: set[str], path: str) -> None:
        self.unknown.extend(path + key for key in obj if key not in known)


def _obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(field, "must be an object")
    return value


def _list(value: object, field: str, most: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(field, "must be a list")
    if most is not None and len(value) > most:
        raise invalid(field, f"at most {most} items, got {len(value)}")
    return value


def _num(value: object, field: str, low: float, high: float | None, integer: bool) -> float:
    ok = not isinstance(value, bool) and (
        isinstance(value, int) if integer else isinstance(value, int | float)
    )
    if not ok or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise invalid(field, f"must be {'an integer' if integer else 'a number'}")
    number = float(value)  # type: ignore[arg-type]
    if number < low or (high is not None and number > high):
        bound = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise invalid(field, f"must be {bound}, got {value}")
    return number


def _ranged(value: object, field: str) -> float:
    """``_num`` with the range of ``_spec.V3_NUMERIC_FIELDS`` for the field's last name."""
    span, integer = _spec.V3_NUMERIC_FIELDS[field.rsplit(".", 1)[-1]]
    return _num(value, field, span.low, span.high, integer)


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, "must be a non-empty string")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if not 1 <= len(value) <= 1024:
        raise invalid(field, "length must be in [1, 1024] characters")
    return value


def _bool(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")


def _enum(value: object, field: str, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or isinstance(value, bool):
        raise invalid(field, "must be one of " + ", ".join(map(str, allowed)))


def _required(request: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if request.get(name) is None:
            raise invalid("request." + name, "is required")


def image_of(value: object, field: str, route: str) -> tuple[bytes, tuple[int, int]]:
    """Decode a bare base64 image and check it against the route's limits."""
    if not isinstance(value, str) or not value:
        raise invalid(field, "must be a non-empty base64 string")
    if value[:5].lower() == "data:":
        raise invalid(field, "must be bare base64, not a data: URI")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not valid base64") from None
    limits = IMAGE_LIMITS[route]
    most_bytes, most_pixels, most_side = limits.max_bytes, limits.max_pixels, limits.max_width
    if len(data) > most_bytes:
        raise APIProblem(
            400,
            "IMAGE_FILE_EXCEEDS_MAX_SIZE",
            f"{field}: image is {len(data)} bytes, at most {most_bytes // MIB} MB",
            {"field": field},
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:
                size = picture.size
    except Image.DecompressionBombError:
        size = (2**16, 2**16)
    except Exception:
        raise APIProblem(
            400, "INVALID_IMAGE_FORMAT", f"{field}: not a decodable image", {"field": field}
        ) from None
    width, height = size
    too_many = most_pixels is not None and width * height > most_pixels
    too_wide = most_side is not None and max(width, height) > most_side
    if too_many or too_wide:
        limit = f"{most_pixels // 1024**2} MP" if most_pixels else f"{most_side}x{most_side}"
        raise APIProblem(
            400,
            "IMAGE_EXCEEDS_MAX_RESOLUTION",
            f"{field}: image is {width}x{height}, at most {limit}",
            {"field": field},
        )
    return data, size


def _extra(check: _Checker, value: object) -> dict[str, Any]:
    extra = _obj(value, "extra")
    check.keys(extra, _EXTRA_KEYS, "extra.")
    if extra.get("response_image_type") is not None:
        _enum(extra["response_image_type"], "extra.response_image_type", _spec.IMAGE_TYPES)
    if extra.get("enable_nsfw_detection") is not None:
        _bool(extra["enable_nsfw_detection"], "extra.enable_nsfw_detection")
    if extra.get("nsfw_detection_level") is not None:
        _enum(extra["nsfw_detection_level"], "extra.nsfw_detection_level", (0, 1, 2))
    if extra.get("webhook") is not None:
        webhook = _obj(extra["webhook"], "extra.webhook")
        check.keys(webhook, {"url", "test_mode"}, "extra.webhook.")
        if webhook.get("test_mode") is not None:
            test_mode = _obj(webhook["test_mode"], "extra.webhook.test_mode")
            check.keys(test_mode, {"enabled", "return_task_status"}, "extra.webhook.test_mode.")
            if test_mode.get("return_task_status") is None:
                raise invalid("extra.webhook.test_mode.return_task_status", "is required")
        # The URL and test-mode checks shared with InstantID.
        check_webhook(webhook)
    if extra.get("custom_storage") is not None:
        storage = _obj(extra["custom_storage"], "extra.custom_storage")
        check.keys(storage, {"aws_s3"}, "extra.custom_storage.")
        if storage.get("aws_s3") is not None:
            s3 = _obj(storage["aws_s3"], "extra.custom_storage.aws_s3")
            names = ("region", "bucket", "path")
            check.keys(s3, {*names, "save_to_path_directly"}, "extra.custom_storage.aws_s3.")
            for name in names:
                _name(s3.get(name), f"extra.custom_storage.aws_s3.{name}")
            if s3.get("save_to_path_directly") is not None:
                field = "extra.custom_storage.aws_s3.save_to_path_directly"
                _bool(s3["save_to_path_directly"], field)
    if extra.get("enterprise_plan") is not None:
        plan = _obj(extra["enterprise_plan"], "extra.enterprise_plan")
        check.keys(plan, {"enabled"}, "extra.enterprise_plan.")
        if plan.get("enabled") is not None:
            _bool(plan["enabled"], "extra.enterprise_plan.enabled")
    return extra


def _common(check: _Checker, request: dict[str, Any]) -> None:
    _required(request, ("model_name", "prompt", "image_num", "steps", "guidance_scale"))
    _required(request, ("sampler_name",))
    _name(request["model_name"], "request.model_name")
    _text(request["prompt"], "request.prompt")
    if request.get("negative_prompt") is not None:
        _text(request["negative_prompt"], "request.negative_prompt")
    _ranged(request["image_num"], "request.image_num")
    _ranged(request["steps"], "request.steps")
    _ranged(request["guidance_scale"], "request.guidance_scale")
    _name(request["sampler_name"], "request.sampler_name")
    if request.get("seed") is not None:
        _ranged(request["seed"], "request.seed")
    if request.get("sd_vae") is not None and not isinstance(request["sd_vae"], str):
        raise invalid("request.sd_vae", "must be a string")
    if request.get("clip_skip") is not None:
        _ranged(request["clip_skip"], "request.clip_skip")
    if request.get("loras") is not None:
        for index, item in enumerate(_list(request["loras"], "request.loras", 5)):
            field = f"request.loras[{index}]"
            lora = _obj(item, field)
            check.keys(lora, {"model_name", "strength"}, "request.loras[].")
            _name(lora.get("model_name"), field + ".model_name")
            if lora.get("strength") is None:
                raise invalid(field + ".strength", "is required")
            _ranged(lora["strength"], field + ".strength")
    if request.get("embeddings") is not None:
        for index, item in enumerate(_list(request["embeddings"], "request.embeddings", 5)):
            field = f"request.embeddings[{index}]"
            embedding = _obj(item, field)
            check.keys(embedding, {"model_name"}, "request.embeddings[].")
            _name(embedding.get("model_name"), field + ".model_name")


def _size(request: dict[str, Any]) -> tuple[int, int]:
    _required(request, ("width", "height"))
    width = _ranged(request["width"], "request.width")
    height = _ranged(request["height"], "request.height")
    return int(width), int(height)


def _refiner(check: _Checker, request: dict[str, Any]) -> None:
    if request.get("refiner") is not None:
        refiner = _obj(request["refiner"], "request.refiner")
        check.keys(refiner, {"switch_at"}, "request.refiner.")
        if refiner.get("switch_at") is None:
            raise invalid("request.refiner.switch_at", "is required")
        _ranged(refiner["switch_at"], "request.refiner.switch_at")


def _txt2img(check: _Checker, request: dict[str, Any]) -> None:
    if request.get("hires_fix") is not None:
        hires = _obj(request["hires_fix"], "request.hires_fix")
        check.keys(
            hires, {"target_width", "target_height", "strength", "upscaler"}, "request.hires_fix."
        )
        for name in ("target_width", "target_height", "strength"):
            if hires.get(name) is None:
                raise invalid("request.hires_fix." + name, "is required")
            _ranged(hires[name], "request.hires_fix." + name)
        if hires.get("upscaler") is not None:
            _enum(hires["upscaler"], "request.hires_fix.upscaler", _spec.HIRES_UPSCALERS)
    _refiner(check, request)
    for name in ("enable_transparent_background", "restore_faces"):
        if request.get(name) is not None:
            _bool(request[name], "request." + name)


def _img2img(check: _Checker, request: dict[str, Any]) -> None:
    if request.get("strength") is not None:
        _ranged(request["strength"], "request.strength")
    _refiner(check, request)
    if request.get("controlnet") is not None:
        controlnet = _obj(request["controlnet"], "request.controlnet")
        check.keys(controlnet, {"units"}, "request.controlnet.")
        if controlnet.get("units") is None:
            raise invalid("request.controlnet.units", "is required")
        for index, item in enumerate(_list(controlnet["units"], "request.controlnet.units")):
            field = f"request.controlnet.units[{index}]"
            unit = _obj(item, field)
            known = {
                "model_name",
                "image_base64",
                "strength",
                "preprocessor",
                "guidance_start",
                "guidance_end",
            }
            check.keys(unit, known, "request.controlnet.units[].")
            _required_in(unit, ("model_name", "image_base64", "strength"), field)
            _name(unit["model_name"], field + ".model_name")
            image_of(unit["image_base64"], field + ".image_base64", "img2img")
            _ranged(unit["strength"], field + ".strength")
            if unit.get("preprocessor") is not None:
                preprocessors = _spec.V3_CONTROLNET_PREPROCESSORS
                _enum(unit["preprocessor"], field + ".preprocessor", preprocessors)
            for name in ("guidance_start", "guidance_end"):
                if unit.get(name) is not None:
                    _ranged(unit[name], f"{field}.{name}")
    if request.get("ip_adapters") is not None:
        for index, item in enumerate(_list(request["ip_adapters"], "request.ip_adapters", 1)):
            field = f"request.ip_adapters[{index}]"
            adapter = _obj(item, field)
            known = {"model_name", "image_base64", "strength"}
            check.keys(adapter, known, "request.ip_adapters[].")
            _required_in(adapter, ("model_name", "image_base64", "strength"), field)
            _enum(adapter["model_name"], field + ".model_name", _spec.IP_ADAPTER_MODELS)
            image_of(adapter["image_base64"], field + ".image_base64", "img2img")
            _ranged(adapter["strength"], field + ".strength")


def _required_in(obj: dict[str, Any], names: tuple[str, ...], path: str) -> None:
    for name in names:
        if obj.get(name) is None:
            raise invalid(f"{path}.{name}", "is required")


def _inpainting(request: dict[str, Any]) -> None:
    numbers = ("mask_blur", "strength", "inpainting_full_res_padding", "initial_noise_multiplier")
    for name in numbers:
        if request.get(name) is not None:
            _ranged(request[name], "request." + name)
    for name in ("inpainting_full_res", "inpainting_mask_invert"):
        if request.get(name) is not None:
            _enum(request[name], "request." + name, (0, 1))


def _images_replaced(value: Any, stand_in: Any) -> Any:
    """A copy of a JSON value with each string under a ``*_base64`` key replaced by
    ``stand_in(string)``, or dropped when that is None."""
    if isinstance(value, list):
        return [_images_replaced(item, stand_in) for item in value]
    if not isinstance(value, dict):
        return value
    copy: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith("_base64") and isinstance(item, str):
            item = stand_in(item)
            if item is not None:
                copy[key] = item
        else:
            copy[key] = _images_replaced(item, stand_in)
    return copy


def _stand_in(image: str) -> str:
    # A str caches its hash: the validation's own decoding costs far more than this.
    return f"<{len(image)} characters, hash {hash(image) & 0xFFFFFFFFFFFFFFFF:016x}>"


def validate_v3(route: str, raw: object) -> V3Submission:
    """The valid submission of ``raw`` to ``route``, else raise :class:`APIProblem` (400)."""
    if not isinstance(raw, dict):
        raise APIProblem(400, INVALID_REQUEST_BODY, "request body must be a JSON object")
    if raw.get("request") is None:
        raise invalid(
            "request", 'is required: the body must be wrapped as {"extra": {...}, "request": {...}}'
        )
    check = _Checker()
    check.keys(raw, {"extra", "request"}, "")
    request = _obj(raw["request"], "request")
    check.keys(request, REQUEST_KEYS[route], "request.")
    extra = _extra(check, raw["extra"]) if raw.get("extra") is not None else {}
    inputs: list[bytes] = []
    if route == "upscale":
        _required(request, ("model_name", "image_base64", "scale_factor"))
        _enum(request["model_name"], "request.model_name", _spec.UPSCALE_MODELS)
        factor = request["scale_factor"]
        low, high = _spec.SCALE_FACTOR_MIN_EXCLUSIVE, _spec.SCALE_FACTOR_MAX
        _num(factor, "request.scale_factor", low, high, False)
        if factor <= low:
            raise invalid("request.scale_factor", f"must be greater than 1, got {factor}")
        data, (width, height) = image_of(request["image_base64"], "request.image_base64", route)
        inputs.append(data)
        width, height = round(width * factor), round(height * factor)
        image_num, steps, prompt = 1, 1, ""
    else:
        _common(check, request)
        image_num, steps, prompt = request["image_num"], request["steps"], request["prompt"]
        if route == "txt2img":
            width, height = _size(request)
            _txt2img(check, request)
        elif route == "img2img":
            width, height = _size(request)
            _required(request, ("image_base64",))
            data, _ = image_of(request["image_base64"], "request.image_base64", route)
            inputs.append(data)
            _img2img(check, request)
        else:
            _required(request, ("image_base64", "mask_image_base64"))
            data, (width, height) = image_of(request["image_base64"], "request.image_base64", route)
            mask, mask_size = image_of(
                request["mask_image_base64"], "request.mask_image_base64", route
            )
            if mask_size != (width, height):
                raise invalid(
                    "request.mask_image_base64",
                    f"must have the image's resolution {width}x{height}, "
                    f"got {mask_size[0]}x{mask_size[1]}",
                )
            inputs.extend((data, mask))
            _inpainting(request)
    if (extra.get("response_image_type") or "png") != "png" and request.get(
        "enable_transparent_background"
    ):
        raise invalid(
            "request.enable_transparent_background", "needs extra.response_image_type png"
        )
    flat = _images_replaced(request, lambda _: None)
    flat.update(
        extra=extra,
        width=width,
        height=height,
        image_num=image_num,
        steps=steps,
        prompt=prompt,
        model_name=request["model_name"],
    )
    same_as = _images_replaced(raw, _stand_in)
    return V3Submission(route, flat, tuple(inputs), tuple(check.unknown), same_as)
