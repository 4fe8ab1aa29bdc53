"""The one cattrs converter for the wire format.

Unstructuring (requests) omits fields left as ``None``. Structuring (answers) is lenient where the
real service drifts: numbers that arrive as strings (``"seed": "1099016411"``, ``"image_url_ttl":
"3600"``), empty strings where a number belongs, ``null`` where a string belongs, unknown task
statuses, unknown keys and missing lists.
"""

from __future__ import annotations

import typing
from typing import Any

import cattrs
from cattrs.gen import make_dict_unstructure_fn

from ._exceptions import InvalidResponseError
from ._models import (
    ControlNet,
    ControlNetUnit,
    EnterprisePlan,
    Extra,
    InstantIDRequest,
    LoRA,
    Model,
    ModelPage,
    TaskStatus,
    Webhook,
    WebhookTestMode,
)

__all__ = ["converter", "structure", "unstructure_request"]

converter = cattrs.Converter()


# Every answer a batch polls passes through these hooks: each tests the type the service sends
# first (``type(x) is int`` excludes bool, which is an int too) before the lenient conversions.


def _lenient_int(value: Any, _: Any = None) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"not an integer: {value!r}")


def _lenient_float(value: Any, _: Any = None) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"not a number: {value!r}")


def _optional(parse: Any, usual: type) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if type(value) is usual:
            return value
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return parse(value)
        except ValueError:
            return None

    return hook


def _lenient_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    return "" if value is None else value if isinstance(value, str) else str(value)


def _lenient_bool(value: Any, _: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


_STATUSES = {status.value: status for status in TaskStatus}


def _status(value: Any, _: Any) -> TaskStatus:
    if type(value) is str:
        return _STATUSES.get(value, TaskStatus.UNKNOWN)
    try:
        return TaskStatus(value)
    except ValueError:
        return TaskStatus.UNKNOWN


converter.register_structure_hook(int, _lenient_int)
converter.register_structure_hook(float, _lenient_float)
converter.register_structure_hook(str, _lenient_str)
converter.register_structure_hook(bool, _lenient_bool)
converter.register_structure_hook(int | None, _optional(_lenient_int, int))
converter.register_structure_hook(float | None, _optional(_lenient_float, float))
converter.register_structure_hook(bool | None, lambda v, _: None if v is None else bool(v))
converter.register_structure_hook(TaskStatus, _status)


@converter.register_structure_hook
def _model_page(value: Any, _: type[ModelPage]) -> ModelPage:
    pagination = value.get("pagination") or {}
    return ModelPage(
        models=converter.structure(value.get("models"), tuple[Model, ...]),
        next_cursor=_lenient_str(pagination.get("next_cursor"), str),
    )


def _is_homogeneous_tuple(cl: Any) -> bool:
    args = typing.get_args(cl)
    return typing.get_origin(cl) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_hook(cl: Any) -> Any:
    element = typing.get_args(cl)[0]
    structure_element = converter.get_structure_hook(element)

    # A missing list (`"videos": null`, or absent `tags`) is an empty one.
    def hook(value: Any, _: Any) -> tuple[Any, ...]:
        if value is None:
            return ()
        if isinstance(value, str | bytes | dict):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return tuple([structure_element(item, element) for item in value])

    return hook


converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook)

# Requests: omit what the caller left unset, rather than sending null.
_REQUEST_CLASSES = frozenset({
    InstantIDRequest, Extra, LoRA, ControlNet, ControlNetUnit, Webhook, WebhookTestMode,
    EnterprisePlan,
})  # fmt: skip


def _omit_none_hook(cl: Any) -> Any:
    base = make_dict_unstructure_fn(cl, converter)

    def hook(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in base(obj).items() if v is not None}

    return hook


converter.register_unstructure_hook_factory(lambda cl: cl in _REQUEST_CLASSES, _omit_none_hook)


def unstructure_request(request: InstantIDRequest) -> dict[str, Any]:
    """The JSON body for ``request``, exactly as the API names its fields."""
    body: dict[str, Any] = converter.unstructure(request)
    return body


def structure(data: Any, cls: type[Any]) -> Any:
    """Parse an answer into ``cls``; an unparseable shape is :class:`InvalidResponseError`."""
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise InvalidResponseError(f"unexpected {cls.__name__} answer: {detail}") from exc
