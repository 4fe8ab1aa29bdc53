"""Request fields as plain JSON-like dicts: merging job lines over flag defaults, then validating.

Job-file lines and command-line flags both speak the API's own field names (``width``,
``sampler_name``, nested ``loras``, ``controlnet`` and ``extra``). This module turns such a dict
into an :class:`InstantIDRequest`, checking keys and JSON types strictly (``"512"`` is not a
width) and leaving every range and enum to the models' validators, so the rules live in one place
(:mod:`novita_async._spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._exceptions import ValidationError
from .._models import (
    ControlNet,
    ControlNetUnit,
    EnterprisePlan,
    Extra,
    InstantIDRequest,
    LoRA,
    Webhook,
    WebhookTestMode,
)

__all__ = ["REQUEST_FIELDS", "build_request", "merge_fields"]

# Asset ids come from uploading a job's images; a job names files, not ids.
_ASSET_FIELDS = frozenset({"face_image_assets_ids", "ref_image_assets_ids", "face_kps_assets_ids"})

REQUEST_FIELDS: frozenset[str] = frozenset(attrs.fields_dict(InstantIDRequest)) - _ASSET_FIELDS

_NESTED: dict[type[Any], dict[str, type[Any]]] = {
    InstantIDRequest: {"controlnet": ControlNet, "extra": Extra},
    Extra: {"webhook": Webhook, "enterprise_plan": EnterprisePlan},
    Webhook: {"test_mode": WebhookTestMode},
}
_LISTS: dict[type[Any], dict[str, type[Any]]] = {
    InstantIDRequest: {"loras": LoRA},
    ControlNet: {"units": ControlNetUnit},
}


def merge_fields(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` over ``defaults``; the ``extra`` blocks merge key by key, the rest replace."""
    merged = dict(defaults)
    for key, value in fields.items():
        if key == "extra" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def build_request(fields: Mapping[str, Any], *, prefix: str = "") -> InstantIDRequest:
    """An :class:`InstantIDRequest` from API-named fields, or :class:`ValidationError` naming one.

    Nested fields are named by path (``loras[1].strength``, ``extra.response_image_type``).
    """
    for name in _ASSET_FIELDS & fields.keys():
        raise ValidationError(name, fields[name], "jobs name image files, not asset ids")
    built: InstantIDRequest = _build(InstantIDRequest, fields, prefix)
    return built


def _build(cls: type[Any], value: object, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValidationError(path or cls.__name__, value, "must be an object")
    known = attrs.fields_dict(cls)
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        here = f"{path}.{key}" if path else key
        if key not in known:
            raise ValidationError(here, item, "unknown field")
        if item is None:
            continue
        if key in _NESTED.get(cls, {}):
            kwargs[key] = _build(_NESTED[cls][key], item, here)
        elif key in _LISTS.get(cls, {}):
            if not isinstance(item, list | tuple):
                raise ValidationError(here, item, "must be a list")
            element = _LISTS[cls][key]
            kwargs[key] = [_build(element, x, f"{here}[{i}]") for i, x in enumerate(item)]
        else:
            kwargs[key] = item
    for field in attrs.fields(cls):
        if field.default is attrs.NOTHING and field.name not in kwargs:
            missing = f"{path}.{field.name}" if path else field.name
            raise ValidationError(missing, None, "is required")
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        if path and exc.field != path and not exc.field.startswith(path + "."):
            raise ValidationError(f"{path}.{exc.field}", exc.value, exc.allowed) from None
        raise
