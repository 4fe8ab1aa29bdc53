"""The model list behind ``GET /v3/model``: the seed's SDXL checkpoints plus a few others."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

from .. import _spec
from ._validation import invalid

__all__ = ["CATALOG", "query_models"]

_DISPLAY = {
    "checkpoint": "Checkpoint",
    "lora": "LoRA",
    "vae": "VAE",
    "controlnet": "ControlNet",
    "upscaler": "Upscaler",
    "textualinversion": "Textual Inversion",
}


def _entry(
    sd_name: str, kind: str, *, is_sdxl: bool = True, source: str = "civitai"
) -> dict[str, Any]:
    stem = sd_name.removesuffix(".safetensors")
    return {
        "id": zlib.crc32(sd_name.encode()) % 1_000_000,
        "name": stem,
        "sd_name": sd_name,
        "type": {"name": kind, "display_name": _DISPLAY[kind]},
        "base_model": "SDXL 1.0" if is_sdxl else "SD 1.5",
        "base_model_type": "SDXL" if is_sdxl else "SD1",
        "is_sdxl": is_sdxl,
        "is_inpainting": "inpainting" in sd_name.lower(),
        "tags": [],
        "cover_url": "",
        "status": 1,
        "source": source,
        "visibility": "public",
        "download_url": "",
        "hash_sha256": "",
    }


CATALOG: tuple[dict[str, Any], ...] = (
    *(_entry(name, "checkpoint") for name in _spec.SDXL_CHECKPOINTS),
    _entry("dreamshaper_8_93211.safetensors", "checkpoint", is_sdxl=False),
    _entry("BoutXOval_SDXL_dim32-000005_92430.safetensors", "lora"),
    _entry("sdxl_vae.safetensors", "vae", source="novita"),
    _entry("controlnet-openpose-sdxl-1.0", "controlnet", source="novita"),
    _entry("controlnet-canny-sdxl-1.0", "controlnet", source="novita"),
)

_DEFAULT_LIMIT = 10
_MAX_LIMIT = 100


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(name, "must be true or false")


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        tag, _, number = text.partition(":")
        if tag == "offset" and number.isdigit():
            return int(number)
    except ValueError:
        pass
    raise invalid("pagination.cursor", "is not a cursor this service gave out")


# How a drifting service might spell a boolean: the client must read each as it means.
_SPELLINGS = {True: ("true", "True", "TRUE", "1"), False: ("false", "False", "FALSE", "0")}


def _drift(model: dict[str, Any], index: int) -> dict[str, Any]:
    spellings = _SPELLINGS[model["is_sdxl"]]
    return {
        **model,
        "is_sdxl": spellings[index % len(spellings)],
        "is_inpainting": "unknown",
    }


def query_models(query: Mapping[str, str], *, drifted_flags: bool = False) -> dict[str, Any]:
    """Filter and page :data:`CATALOG` by the documented query parameters (its booleans as text
    with ``drifted_flags``: see ``EmulatorConfig.drifted_model_flags``)."""
    visibility = query.get("filter.visibility") or None
    if visibility is not None and visibility not in ("public", "private"):
        raise invalid("filter.visibility", "must be public or private")
    types = {t.strip() for t in query.get("filter.types", "").split(",") if t.strip()}
    for kind in types:
        if kind not in _spec.MODEL_TYPES:
            raise invalid("filter.types", "must be one of " + ", ".join(_spec.MODEL_TYPES))
    source = query.get("filter.source") or None
    is_sdxl = _flag(query, "filter.is_sdxl")
    is_inpainting = _flag(query, "filter.is_inpainting")
    text = (query.get("filter.query") or "").strip().lower()

    raw_limit = query.get("pagination.limit", "")
    if raw_limit == "":
        limit = _DEFAULT_LIMIT
    elif raw_limit.isdigit() and 1 <= int(raw_limit) <= _MAX_LIMIT:
        limit = int(raw_limit)
    else:
        raise invalid("pagination.limit", f"must be an integer in [1, {_MAX_LIMIT}]")
    cursor = query.get("pagination.cursor", "")
    offset = _decode_cursor(cursor) if cursor else 0

    def keep(model: dict[str, Any]) -> bool:
        return (
            (visibility is None or model["visibility"] == visibility)
            and (not types or model["type"]["name"] in types)
            and (source is None or model["source"] == source)
            and (is_sdxl is None or model["is_sdxl"] is is_sdxl)
            and (is_inpainting is None or model["is_inpainting"] is is_inpainting)
            and (not text or text in model["sd_name"].lower() or text in model["name"].lower())
        )

    matching = [model for model in CATALOG if keep(model)]
    page = matching[offset : offset + limit]
    if drifted_flags:
        page = [_drift(model, offset + n) for n, model in enumerate(page)]
    more = offset + limit < len(matching)
    return {
        "models": page,
        "pagination": {"next_cursor": _encode_cursor(offset + limit) if more else ""},
    }
