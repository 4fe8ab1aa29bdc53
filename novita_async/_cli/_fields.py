"""Request fields as plain JSON-like dicts: merging job lines over flag defaults, then validating.

Job-file lines and command-line flags both speak the API's own field names (``width``,
``sampler_name``, nested ``loras``, ``controlnet`` and ``extra``). The converter turns such a dict
into an :class:`InstantIDRequest` (:func:`novita_async._converter.structure_request`: unknown keys
and JSON types refused by path, ranges and enums left to the models' validators); this module adds
only what is the command line's: which fields a job may set, and how a line merges over the flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._converter import structure_request
from .._exceptions import ValidationError
from .._models import InstantIDRequest

__all__ = ["REQUEST_FIELDS", "build_request", "merge_fields"]

# Asset ids come from uploading a job's images; a job names files, not ids.
_ASSET_FIELDS = frozenset({"face_image_assets_ids", "ref_image_assets_ids", "face_kps_assets_ids"})

REQUEST_FIELDS: frozenset[str] = frozenset(attrs.fields_dict(InstantIDRequest)) - _ASSET_FIELDS


def merge_fields(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` over ``defaults``; the ``extra`` blocks merge key by key, the rest replace."""
    merged = dict(defaults)
    for key, value in fields.items():
        if key == "extra" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def build_request(fields: Mapping[str, Any]) -> InstantIDRequest:
    """An :class:`InstantIDRequest` from a job's or the flags' fields, or :class:`ValidationError`.

    Nested fields are named by path (``loras[1].strength``, ``extra.response_image_type``).
    """
    for name in _ASSET_FIELDS & fields.keys():
        raise ValidationError(name, fields[name], "jobs name image files, not asset ids")
    return structure_request(fields)
