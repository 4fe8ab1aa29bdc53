"""The one cattrs converter: every wire and file format to models and back.

Requests unstructure to the API's JSON without the fields left ``None``; a request structured here
is built as strictly as :meth:`~._models.InstantIDRequest.from_dict` builds it (the models never
import the converter). Answers and webhook bodies structure leniently where the real service
drifts: numbers as strings (``"seed": "1099016411"``), empty strings for numbers, ``null`` for
strings, unknown task statuses and event types, unknown keys, missing lists. An answer's boolean
(``is_sdxl``, NSFW ``valid``) takes ``true``/``false``/``1``/``0`` in any form, anything else is
``None`` with a warning naming the field (one drifted value never fails a whole listing); a plain
``bool`` (our own files) takes the same and refuses the rest. Journal records and result lines
(attrs classes in :mod:`.batch`) go through the default attrs hooks.
"""

from __future__ import annotations

import enum
import logging
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import _models
from ._exceptions import InvalidResponseError
from ._models import InstantIDRequest, ModelPage, TaskResult, TaskStatus, WebhookEvent

__all__ = ["converter", "structure", "submitted_task_id", "unstructure_request"]

converter = cattrs.Converter()
logger = logging.getLogger("novita_async")


# Every answer a batch polls passes through these hooks: each tests the type the service sends
# first (``type(x) is int`` excludes bool, which is an int too) before the lenient conversions.


def _lenient_int(value: Any, _: Any = None) -> int:
    if type(value) is int:
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
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
    return value if type(value) is str else "" if value is None else str(value)


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _boolean(value: Any, _: Any = None) -> bool:
    """``value`` as a boolean: JSON's, ``0``/``1``, or the text ``true``/``false``/``1``/``0``
    in any case; anything else is ``ValueError`` (``"yes"`` is not a boolean the service sends,
    and guessing would turn ``"false"`` into ``True``, as ``bool(...)`` does)."""
    if type(value) is bool:
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and (parsed := _BOOLEANS.get(value.strip().lower())) is not None:
        return parsed
    raise ValueError(f"not a boolean: {value!r}")


def _answer_flag(field: str) -> Any:
    """The hook of an answer's ``bool | None`` field: lenient, as answers are (one drifted value
    must not fail a whole model listing): what is not a boolean is unknown, and said."""

    def hook(value: Any, _: Any) -> bool | None:
        if value is None or type(value) is bool:
            return value
        try:
            return _boolean(value)
        except ValueError:
            logger.warning(
                "%s: %r is not a boolean the service sends; taken as unknown", field, value
            )
            return None

    return hook


def _has_answer_flags(cl: Any) -> bool:
    # The answers' classes (_models, not the request's, which are strict): those with a flag.
    answer = isinstance(cl, type) and getattr(_models, cl.__name__, None) is cl
    if not answer or not attrs.has(cl) or cl in _REQUEST_CLASSES:
        return False
    attrs.resolve_types(cl)
    return any(field.type == bool | None for field in attrs.fields(cl))


def _answer_with_flags_hook(cl: Any) -> Any:
    flags: dict[str, Any] = {
        field.name: override(struct_hook=_answer_flag(f"{cl.__name__}.{field.name}"))
        for field in attrs.fields(cl)
        if field.type == bool | None
    }
    return make_dict_structure_fn(cl, converter, **flags)


_STATUSES = {status.value: status for status in TaskStatus}


def _status(value: Any, _: Any) -> TaskStatus:
    return (
        _STATUSES.get(value, TaskStatus.UNKNOWN) if isinstance(value, str) else TaskStatus.UNKNOWN
    )


converter.register_structure_hook(int, _lenient_int)
converter.register_structure_hook(float, _lenient_float)
converter.register_structure_hook(str, _lenient_str)
converter.register_structure_hook(bool, _boolean)
converter.register_structure_hook(int | None, _optional(_lenient_int, int))
converter.register_structure_hook(float | None, _optional(_lenient_float, float))
converter.register_structure_hook(bool | None, lambda v, _: None if v is None else _boolean(v))
# Any other str-valued enum (a job's status) must be one of its values: without this hook the
# lenient str hook above would take it, as a subclass of str, and let any string through.
converter.register_structure_hook(enum.StrEnum, lambda value, cls: cls(value))
converter.register_structure_hook(TaskStatus, _status)
# Times in files and JSON reports (a run's status) are ISO 8601 text.
converter.register_unstructure_hook(datetime, datetime.isoformat)
converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))


@converter.register_structure_hook
def _model_page(value: Any, _: type[ModelPage]) -> ModelPage:
    pagination = value.get("pagination") or {}
    return ModelPage(
        models=converter.structure(value.get("models"), tuple[_models.Model, ...]),
        next_cursor=_lenient_str(pagination.get("next_cursor"), str),
    )


@converter.register_structure_hook
def _webhook_event(value: Any, _: type[WebhookEvent]) -> WebhookEvent:
    if not isinstance(value, Mapping):
        raise ValueError("a webhook body must be a JSON object")
    event_type = value.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("event_type must be a non-empty string")
    if event_type != _models.EventType.ASYNC_TASK_RESULT:
        return WebhookEvent(event_type)
    payload = value.get("payload")
    if not isinstance(payload, Mapping):
        raise ValueError("payload must be an object")
    result = converter.structure(payload, TaskResult)
    # Without its task id an event cannot be matched to a task; the lenient str hook makes a
    # missing or null id an empty one.
    if not result.task_id:
        raise ValueError("payload.task.task_id is missing")
    return WebhookEvent(event_type, result)


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
    InstantIDRequest, _models.Extra, _models.LoRA, _models.ControlNet, _models.ControlNetUnit,
    _models.Webhook, _models.WebhookTestMode, _models.EnterprisePlan, _models.Embedding,
    _models.HiresFix, _models.Refiner, _models.ImageControlNet, _models.ImageControlNetUnit,
    _models.IPAdapter, *_models.TASKS.values(),
})  # fmt: skip


def _omit_none_hook(cl: Any) -> Any:
    base = make_dict_unstructure_fn(cl, converter)

    def hook(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in base(obj).items() if v is not None}

    return hook


converter.register_unstructure_hook_factory(lambda cl: cl in _REQUEST_CLASSES, _omit_none_hook)
converter.register_structure_hook_factory(_has_answer_flags, _answer_with_flags_hook)
# A request structured here is as strict as one built from a job file's fields.
converter.register_structure_hook(
    InstantIDRequest, lambda value, _: InstantIDRequest.from_dict(value)
)


for _task in _models.TASKS.values():
    converter.register_structure_hook(_task, lambda value, cls: cls.from_dict(value))


def submitted_task_id(answer: Any) -> str:
    """The task id of a submission's answer: ``{"task_id": ...}``, or the older shape several
    v3 doc examples still show, ``{"code": 0, "msg": "", "data": {"task_id": ...}}``; an answer
    with neither is :class:`InvalidResponseError` (its ``msg`` quoted when it has one)."""
    if isinstance(answer, Mapping):
        task_id = answer.get("task_id")
        data = answer.get("data")
        if task_id is None and isinstance(data, Mapping):
            task_id = data.get("task_id")
        if isinstance(task_id, str) and task_id:
            return task_id
        message = answer.get("msg")
        if isinstance(message, str) and message:
            code = answer.get("code")
            raise InvalidResponseError(
                f"the submit answer has no task_id (code {code!r}: {message[:200]})"
            )
    raise InvalidResponseError("the submit answer has no task_id")


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
