"""The request flags: one per API field, named after it, validated by the models.

Request flags are named after the API's fields (``--width`` for ``width``, ``--image-type`` for
``extra.response_image_type``) and hold no defaults of their own: a flag left out means "the line's
value, else the model's default", and the help shows the model's default. Ranges are checked by the
models themselves (:mod:`novita_async._spec`), then reported against the flag that set them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .. import InstantIDRequest, ValidationError, _spec
from ._fields import build_request

__all__ = [
    "METAVARS",
    "REQUEST_FLAGS",
    "RequestFlag",
    "add_request_flags",
    "check_request_flags",
    "request_fields",
]

METAVARS: dict[object, str] = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def _lora(text: str) -> dict[str, Any]:
    name, sep, strength = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:STRENGTH, got {text!r}")
    try:
        return {"model_name": name, "strength": float(strength)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {strength!r}") from None


def _controlnet(text: str) -> dict[str, Any]:
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected MODEL:STRENGTH:PREPROCESSOR, got {text!r}")
    name, strength, preprocessor = parts
    try:
        return {"model_name": name, "strength": float(strength), "preprocessor": preprocessor}
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {strength!r}") from None


@attrs.frozen
class RequestFlag:
    """One command-line flag that sets one request field (``path`` inside the JSON body)."""

    flag: str
    path: tuple[str, ...]
    type: Callable[[str], Any] | None
    help: str
    metavar: str | None = None
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return "req_" + self.flag.lstrip("-").replace("-", "_")


def _default(name: str) -> str:
    default = attrs.fields_dict(InstantIDRequest)[name].default
    return f" (default: {default})" if default is not None else ""


def _numeric(flag: str, path: str, what: str = "") -> RequestFlag:
    name = path.rpartition(".")[2]
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    default = _default(name) if name == path else ""
    text = f"{what}{', ' if what else ''}in {allowed}{default}"
    return RequestFlag(flag, tuple(path.split(".")), int if integer else float, text)


def _choice(flag: str, path: str, choices: tuple[str, ...], default: str) -> RequestFlag:
    return RequestFlag(flag, tuple(path.split(".")), str, f"one of: {', '.join(choices)}{default}")


REQUEST_FLAGS: tuple[RequestFlag, ...] = (
    RequestFlag("--prompt", ("prompt",), str, "what to generate, 1 to 1024 characters"),
    RequestFlag("--negative-prompt", ("negative_prompt",), str, "what to keep out of the image"),
    RequestFlag("--model", ("model_name",), str,
                "an SDXL checkpoint's sd_name" + _default("model_name")),
    _numeric("--width", "width", "pixels"),
    _numeric("--height", "height", "pixels"),
    _numeric("--image-num", "image_num", "images per task"),
    _numeric("--steps", "steps", "denoising steps"),
    _numeric("--guidance-scale", "guidance_scale"),
    _choice("--sampler", "sampler_name", _spec.SAMPLERS, _default("sampler_name")),
    _numeric("--seed", "seed", "random when -1 (the service's default)"),
    _numeric("--id-strength", "id_strength", "identity fidelity"),
    _numeric("--adapter-strength", "adapter_strength", "detail"),
    _numeric("--clip-skip", "clip_skip"),
    _numeric("--control-guidance-start", "control_guidance_start"),
    _numeric("--control-guidance-end", "control_guidance_end"),
    RequestFlag("--lora", ("loras",), _lora, f"a LoRA, repeatable up to {_spec.MAX_LORAS} times",
                "NAME:STRENGTH", repeatable=True),
    RequestFlag("--controlnet", ("controlnet", "units"), _controlnet,
                "a ControlNet unit, repeatable", "MODEL:STRENGTH:PREPROCESSOR", repeatable=True),
    _choice("--image-type", "extra.response_image_type", _spec.IMAGE_TYPES, " (default: png)"),
    RequestFlag("--nsfw-detection", ("extra", "enable_nsfw_detection"), None,
                "ask the service to check images for NSFW content"),
    _numeric("--nsfw-detection-level", "extra.nsfw_detection_level", "0 is strictest"),
    RequestFlag("--webhook", ("extra", "webhook", "url"), str,
                "a URL the service calls when a task ends", "URL"),
)  # fmt: skip


def add_request_flags(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    group = parser.add_argument_group(
        "request fields",
        "named after the API's fields" + ("" if prompt_required else "; defaults for job lines"),
    )
    for spec in REQUEST_FLAGS:
        if spec.type is None:
            group.add_argument(spec.flag, dest=spec.dest, action=argparse.BooleanOptionalAction,
                               default=None, help=spec.help)  # fmt: skip
            continue
        group.add_argument(
            spec.flag,
            dest=spec.dest,
            type=spec.type,
            default=None,
            metavar=spec.metavar or METAVARS.get(spec.type, "TEXT"),
            action="append" if spec.repeatable else "store",
            required=prompt_required and spec.flag == "--prompt",
            help=spec.help,
        )


def request_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The request fields the flags set, as a nested API-named dict (unset flags are absent)."""
    fields: dict[str, Any] = {}
    for spec in REQUEST_FLAGS:
        value = getattr(ns, spec.dest, None)
        if value is None:
            continue
        target = fields
        for key in spec.path[:-1]:
            target = target.setdefault(key, {})
        target[spec.path[-1]] = value
    return fields


def _flag_for(field: str) -> str | None:
    path = tuple(re.sub(r"\[\d+\]", "", field).split("."))
    for spec in REQUEST_FLAGS:
        if path[: len(spec.path)] == spec.path or spec.path[: len(path)] == path:
            return spec.flag
    return None


def check_request_flags(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    fields = request_fields(ns)
    try:
        build_request({"prompt": "placeholder", **fields})
    except ValidationError as exc:
        flag = _flag_for(exc.field) or exc.field
        parser.error(f"argument {flag}: {exc.value!r} is not allowed: {exc.allowed}")
