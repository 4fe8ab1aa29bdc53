"""attrs validators raising the package's own errors, naming the field and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from novita_async import (
    ClientConfig,
    ConfigurationError,
    InstantIDRequest,
    LoRA,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    ValidationError,
)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Timeouts(connect=0), "Timeouts.connect must be a positive number or None"),
        (lambda: Timeouts(total=True), "Timeouts.total must be a positive number or None"),
        (lambda: RetryPolicy(attempts=True), "RetryPolicy.attempts must be an integer >= 1"),
        (lambda: RetryPolicy(attempts=2.0), "RetryPolicy.attempts must be an integer >= 1"),
        (
            lambda: RetryPolicy(backoff_base=math.nan),
            "RetryPolicy.backoff_base must be a number >= 0",
        ),
        (lambda: PollPolicy(margin=0), "PollPolicy.margin must be a positive number"),
        (lambda: PollPolicy(growth="2"), "PollPolicy.growth must be a positive number"),
        (
            lambda: ClientConfig.resolve("key", max_connections=0),
            "ClientConfig.max_connections must be an integer >= 1",
        ),
    ],
)
def test_a_bad_option_names_its_class_field_and_what_is_allowed(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert str(caught.value) == message


def test_good_options_pass() -> None:
    assert Timeouts(connect=0.5, total=None).connect == 0.5
    assert RetryPolicy(attempts=1, backoff_base=0).attempts == 1
    assert PollPolicy(min_delay=0.01, max_delay=math.inf).max_delay == math.inf


@pytest.mark.parametrize(
    ("fields", "field", "allowed"),
    [
        ({"prompt": 7}, "prompt", "must be a string"),
        ({"prompt": ""}, "prompt", "length must be in [1, 1024] characters"),
        ({"negative_prompt": "x" * 1025}, "negative_prompt", "length must be in"),
        ({"model_name": "  "}, "model_name", "must be a non-empty string"),
        ({"sampler_name": None}, "sampler_name", "is required: one of"),
        ({"sampler_name": "Fast"}, "sampler_name", "must be one of"),
        ({"face_image_assets_ids": ["a", ""]}, "face_image_assets_ids", "non-empty asset ids"),
        ({"steps": None}, "steps", "required: a value in [1, 100]"),
        ({"steps": 2.0}, "steps", "must be an integer in [1, 100]"),
        ({"guidance_scale": math.nan}, "guidance_scale", "must be in [1, 30]"),
        ({"seed": True}, "seed", "must be an integer in >= -1"),
    ],
)
def test_a_bad_request_field_is_a_validation_error_naming_it(
    fields: dict[str, object], field: str, allowed: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        InstantIDRequest(**{"prompt": "a portrait", **fields})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert allowed in caught.value.allowed


@pytest.mark.parametrize("strength", [math.inf, math.nan, "1", True])
def test_a_lora_strength_must_be_a_finite_number(strength: object) -> None:
    with pytest.raises(ValidationError, match="must be a finite number"):
        LoRA(model_name="style", strength=strength)  # type: ignore[arg-type]
