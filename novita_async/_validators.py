"""Validators and converters of the request models, kept next to nothing else.

Each raises :class:`ValidationError` naming the field (with its path for nested fields, such as
``loras[1].strength``), the value and what is allowed, so that a bad request never leaves the
process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs
from attrs import validators as av

from . import _spec
from ._exceptions import ConfigurationError, ValidationError

T = TypeVar("T")

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], Any]
"""What ``attrs.field(validator=...)`` takes; every validator here is one."""


def raising(
    error: Callable[[Any, attrs.Attribute[Any], Any], Exception], *checks: Validator
) -> Validator:
    """The ``attrs.validators`` ``checks`` in turn, a failure raised as ``error(instance,
    attribute, value)``: the package's own error naming the field, not attrs' bare ``TypeError``
    or ``ValueError``."""
    check = av.and_(*checks)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(instance, attribute, value)
        except (TypeError, ValueError):
            raise error(instance, attribute, value) from None

    return validate


def refusing(allowed: str, *checks: Validator) -> Validator:
    """``checks`` for a request field: a failure is a :class:`ValidationError`, ``allowed`` its
    last words."""
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


def _not_bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # A bool is an int to Python, never a number to the API. (``not_(instance_of(bool))`` says
    # the same, but raises and catches an exception for every value that is fine.)
    if isinstance(value, bool):
        raise TypeError(f"{attribute.name} must not be a bool")


NUMBER = (_not_bool, av.instance_of((int, float)))
INTEGER = (_not_bool, av.instance_of(int))
# Every comparison with NaN is false, so these bounds refuse it as well as the infinities.
FINITE = (av.gt(-math.inf), av.lt(math.inf))


def _required(allowed: str) -> Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            raise ValidationError(attribute.name, value, allowed)

    return check


def _numeric(name: str) -> Validator:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    bounds = [av.ge(allowed.low)] + ([] if allowed.high is None else [av.le(allowed.high)])
    return av.and_(
        refusing(
            f"must be {'an integer' if integer else 'a number'} in {allowed}",
            *(INTEGER if integer else NUMBER),
        ),
        refusing(f"must be in {allowed}", *bounds),
    )


_OPTIONAL = {name: av.optional(_numeric(name)) for name in _spec.NUMERIC_FIELDS}
_REQUIRED = {
    name: av.and_(_required(f"required: a value in {allowed}"), _numeric(name))
    for name, (allowed, _) in _spec.NUMERIC_FIELDS.items()
}


def in_range(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Check an optional numeric field against the documented range of its name."""
    _OPTIONAL[attribute.name](instance, attribute, value)


def required_in_range(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Check a numeric field the API requires: None would drop it from the JSON."""
    _REQUIRED[attribute.name](instance, attribute, value)


text: Validator = av.optional(
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
name: Validator = refusing(
    "must be a non-empty string", av.instance_of(str), av.matches_re(r"(?s).*\S.*")
)


def one_of(choices: tuple[str, ...], *, required: bool = False) -> Validator:
    listed = ", ".join(choices)
    check = refusing("must be one of " + listed, av.in_(choices))
    if required:
        return av.and_(_required("is required: one of " + listed), check)
    return av.optional(check)


asset_ids: Validator = av.optional(
    refusing(
        "must be a list of non-empty asset ids",
        av.deep_iterable(av.and_(av.instance_of(str), av.min_len(1))),
    )
)

finite: Validator = refusing("must be a finite number", *NUMBER, *FINITE)

boolean: Validator = av.optional(refusing("must be true or false", av.instance_of(bool)))


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
