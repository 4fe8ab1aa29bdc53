"""Validation of the raw JSON of ``POST /v3/async/instant-id`` against the seed document.

This checks what went over the wire, independently of the client's attrs models, against the one
table in :mod:`novita_async._spec`. Unknown fields are ignored, as the real service does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .. import _spec
from ._responses import APIProblem

__all__ = ["check_webhook", "invalid", "validate_instant_id"]

INVALID_REQUEST_BODY = "INVALID_REQUEST_BODY"


def invalid(field: str, problem: str) -> APIProblem:
    return APIProblem(400, INVALID_REQUEST_BODY, f"{field}: {problem}", {"field": field})


def _is_number(value: object, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _number(body: dict[str, Any], name: str, path: str = "") -> None:
    value = body[name]
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    field = path + name
    if not _is_number(value, integer):
        kind = "an integer" if integer else "a number"
        raise invalid(field, f"must be {kind} in {allowed}")
    if value not in allowed:
        raise invalid(field, f"must be in {allowed}, got {value}")


def _text(body: dict[str, Any], name: str) -> None:
    value = body[name]
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value) not in _spec.PROMPT_LENGTH:
        raise invalid(name, f"length must be in {_spec.PROMPT_LENGTH} characters")


def _finite(value: object, field: str) -> None:
    if not _is_number(value, integer=False):
        raise invalid(field, "must be a finite number")


def _name(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, "must be a non-empty string")


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(field, "must be an object")
    return value


def _asset_ids(
    body: dict[str, Any], name: str, asset_exists: Callable[[str], bool], named_assets: bool
) -> list[str]:
    value = body[name]
    if not isinstance(value, list) or not value:
        raise invalid(name, "must be a non-empty list of asset ids")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise invalid(f"{name}[{index}]", "must be a non-empty string")
        if not asset_exists(item):
            if not named_assets:
                # What a client must be ready for: no word of which id, or that it was an id.
                raise APIProblem(
                    400, INVALID_REQUEST_BODY, "invalid request body", with_metadata=False
                )
            raise invalid(f"{name}[{index}]", f"unknown asset id {item!r}")
    return value


def _loras(value: object) -> None:
    if not isinstance(value, list):
        raise invalid("loras", "must be a list")
    if len(value) > _spec.MAX_LORAS:
        raise invalid("loras", f"at most {_spec.MAX_LORAS} LoRAs are supported, got {len(value)}")
    for index, item in enumerate(value):
        lora = _object(item, f"loras[{index}]")
        _name(lora.get("model_name"), f"loras[{index}].model_name")
        _finite(lora.get("strength"), f"loras[{index}].strength")


def _controlnet(value: object) -> None:
    controlnet = _object(value, "controlnet")
    units = controlnet.get("units", [])
    if not isinstance(units, list):
        raise invalid("controlnet.units", "must be a list")
    for index, item in enumerate(units):
        field = f"controlnet.units[{index}]"
        unit = _object(item, field)
        _name(unit.get("model_name"), field + ".model_name")
        _finite(unit.get("strength"), field + ".strength")
        if unit.get("preprocessor") not in _spec.CONTROLNET_PREPROCESSORS:
            raise invalid(
                field + ".preprocessor",
                "must be one of " + ", ".join(_spec.CONTROLNET_PREPROCESSORS),
            )


def _extra(value: object) -> None:
    extra = _object(value, "extra")
    image_type = extra.get("response_image_type")
    if image_type is not None and image_type not in _spec.IMAGE_TYPES:
        raise invalid("extra.response_image_type", "must be one of " + ", ".join(_spec.IMAGE_TYPES))
    nsfw = extra.get("enable_nsfw_detection")
    if nsfw is not None and not isinstance(nsfw, bool):
        raise invalid("extra.enable_nsfw_detection", "must be true or false")
    if extra.get("nsfw_detection_level") is not None:
        _number(extra, "nsfw_detection_level", "extra.")
    if extra.get("webhook") is not None:
        check_webhook(extra["webhook"])


_TEST_STATUSES = (_spec.STATUS_SUCCEED, _spec.STATUS_FAILED)


def check_webhook(value: object) -> None:
    webhook = _object(value, "extra.webhook")
    _name(webhook.get("url"), "extra.webhook.url")
    parts = urlsplit(str(webhook["url"]))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("extra.webhook.url", "must be an http or https URL")
    if webhook.get("test_mode") is None:
        return
    test_mode = _object(webhook["test_mode"], "extra.webhook.test_mode")
    if not isinstance(test_mode.get("enabled"), bool):
        raise invalid("extra.webhook.test_mode.enabled", "must be true or false")
    status = test_mode.get("return_task_status")
    if status is not None and status not in _TEST_STATUSES:
        field = "extra.webhook.test_mode.return_task_status"
        raise invalid(field, "must be one of " + ", ".join(_TEST_STATUSES))


def validate_instant_id(
    body: object, asset_exists: Callable[[str], bool], *, named_assets: bool = True
) -> dict[str, Any]:
    """Return the body if it is a valid request, else raise :class:`APIProblem` (400).
    ``named_assets``: an unknown asset id is named in the answer (else a plain 400)."""
    if not isinstance(body, dict):
        raise APIProblem(400, INVALID_REQUEST_BODY, "request body must be a JSON object")
    for name in _spec.REQUIRED_FIELDS:
        if body.get(name) is None:
            raise invalid(name, "is required")

    model_name = body["model_name"]
    _name(model_name, "model_name")
    if model_name not in _spec.SDXL_CHECKPOINTS:
        raise invalid("model_name", f"unknown model {model_name!r}; use an SDXL checkpoint")
    faces = _asset_ids(body, "face_image_assets_ids", asset_exists, named_assets)
    _asset_ids(body, "ref_image_assets_ids", asset_exists, named_assets)
    _text(body, "prompt")
    if body.get("negative_prompt") is not None:
        _text(body, "negative_prompt")
    for name in _spec.NUMERIC_FIELDS:
        if name != "nsfw_detection_level" and body.get(name) is not None:
            _number(body, name)
    if body["sampler_name"] not in _spec.SAMPLERS:
        raise invalid("sampler_name", "must be one of " + ", ".join(_spec.SAMPLERS))
    if body.get("face_kps_assets_ids") is not None:
        kps = _asset_ids(body, "face_kps_assets_ids", asset_exists, named_assets)
        if len(kps) != len(faces):
            raise invalid(
                "face_kps_assets_ids",
                f"must have as many ids as face_image_assets_ids ({len(faces)}), got {len(kps)}",
            )
    if body.get("loras") is not None:
        _loras(body["loras"])
    if body.get("controlnet") is not None:
        _controlnet(body["controlnet"])
    if body.get("extra") is not None:
        _extra(body["extra"])
    return body
