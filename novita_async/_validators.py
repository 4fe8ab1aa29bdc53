"""Validators and converters of the request models, kept next to nothing else.

Each raises :class:`ValidationError` naming the field (with its path for nested fields, such as
``loras[1].strength``), the value and what is allowed, so that a bad request never leaves the
process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from . import _spec
from ._exceptions import ValidationError

T = TypeVar("T")


# (low, high or +inf, accepted exact types) per numeric field: the common case is one dict lookup,
# one type test and two comparisons, since every request of a batch passes through here.
_FAST: dict[str, tuple[float, float, tuple[type, ...]]] = {
    name: (r.low, math.inf if r.high is None else r.high, (int,) if integer else (int, float))
    for name, (r, integer) in _spec.NUMERIC_FIELDS.items()
}


def check_number(name: str, value: object) -> None:
    low, high, types = _FAST[name]
    if type(value) in types and low <= value <= high:  # type: ignore[operator]
        return  # NaN fails the comparisons, so it takes the slow path and is refused there
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ValidationError(name, value, f"must be {kind} in {allowed}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(name, value, f"must be a finite number in {allowed}")
    if value not in allowed:
        raise ValidationError(name, value, f"must be in {allowed}")


def in_range(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Check an optional numeric field against the documented range of its name."""
    if value is not None:
        check_number(attribute.name, value)


def required_in_range(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Check a numeric field the API requires: None would drop it from the JSON."""
    if value is None:
        allowed, _integer = _spec.NUMERIC_FIELDS[attribute.name]
        raise ValidationError(attribute.name, value, f"required: a value in {allowed}")
    check_number(attribute.name, value)


def text(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(attribute.name, value, "must be a string")
    if len(value) not in _spec.PROMPT_LENGTH:
        raise ValidationError(
            attribute.name, value, f"length must be in {_spec.PROMPT_LENGTH} characters"
        )


def name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(attribute.name, value, "must be a non-empty string")


def one_of(choices: tuple[str, ...], *, required: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and required:
            raise ValidationError(
                attribute.name, value, "is required: one of " + ", ".join(choices)
            )
        if value is not None and value not in choices:
            raise ValidationError(attribute.name, value, "must be one of " + ", ".join(choices))

    return check


def asset_ids(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    for item in value:  # type: ignore[attr-defined]
        if not isinstance(item, str) or not item:
            raise ValidationError(attribute.name, value, "must be a list of non-empty asset ids")


def finite(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(attribute.name, value, "must be a finite number")


def boolean(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "must be true or false")


def str_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        # A bare string would otherwise become a tuple of characters.
        raise ValidationError("asset ids", value, "must be a list of asset ids, not a string")
    if not isinstance(value, Iterable):
        raise ValidationError("asset ids", value, "must be a list of asset ids")
    return tuple(value)


def nested(value: object, path: str, cls: type[T]) -> T | None:
    """``value`` as a ``cls``: an instance is kept, a mapping of its fields is built into one."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return _build(cls, value, path)
    raise ValidationError(path, value, f"must be a {cls.__name__} or a mapping of its fields")


def nested_list(value: object, path: str, cls: type[T]) -> tuple[T, ...] | None:
    """``value`` as a tuple of ``cls``, each item an instance or a mapping of its fields."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError(path, value, f"must be a list of {cls.__name__}")
    items = []
    for index, item in enumerate(value):
        built = nested(item, f"{path}[{index}]", cls)
        if built is None:
            raise ValidationError(f"{path}[{index}]", item, f"must be a {cls.__name__}")
        items.append(built)
    return tuple(items)


def _build(cls: type[T], mapping: Mapping[Any, Any], path: str) -> T:
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    known = [field.name for field in fields]
    for key in mapping:
        if key not in known:
            raise ValidationError(
                f"{path}.{key}", mapping[key], "is not a field: one of " + ", ".join(known)
            )
    missing = [f.name for f in fields if f.default is attrs.NOTHING and f.name not in mapping]
    if missing:
        raise ValidationError(path, dict(mapping), "needs " + ", ".join(missing))
    try:
        return cls(**mapping)
    except ValidationError as exc:
        raise ValidationError(f"{path}.{exc.field}", exc.value, exc.allowed) from None
