"""Booleans in the service's answers: ``true``/``false``/``1``/``0`` in any case and form parse;
anything else is unknown (``None``) with a warning naming the field, never a failed answer. Our
own files' plain ``bool`` fields take the same values and refuse the rest."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import NovitaClient, TaskResult
from novita_async._converter import converter, structure
from novita_async._models import Model, ModelPage
from novita_async.emulator import Emulator
from novita_async.emulator._catalog import CATALOG

TRUE = [True, 1, "true", "True", "TRUE", " true ", "1", " 1"]
FALSE = [False, 0, "false", "False", "FALSE", "fAlSe", "0", "0 "]
DRIFTED = ["yes", "no", "maybe", "", "  ", "2", "-1", "t", "f", 2, -1, 0.5, 1.5, [], {}, "null"]


def model_with(field: str, value: Any) -> Model:
    model: Model = structure({"sd_name": "m", field: value}, Model)
    return model


@pytest.mark.parametrize("field", ["is_sdxl", "is_inpainting"])
@pytest.mark.parametrize(
    ("value", "parsed"), [*((v, True) for v in TRUE), *((v, False) for v in FALSE), (None, None)]
)
def test_model_flags_parse_what_means_true_or_false(field: str, value: Any, parsed: bool) -> None:
    assert getattr(model_with(field, value), field) is parsed


@pytest.mark.parametrize("field", ["is_sdxl", "is_inpainting"])
@pytest.mark.parametrize("value", DRIFTED, ids=repr)
def test_a_drifted_model_flag_is_unknown_and_named_in_a_warning(
    field: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="novita_async"):
        assert getattr(model_with(field, value), field) is None
    (record,) = caplog.records
    assert f"Model.{field}" in record.getMessage() and repr(value) in record.getMessage()


def test_one_drifted_value_leaves_the_rest_of_a_listing_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = {
        "models": [
            {"sd_name": "a", "is_sdxl": "false", "is_inpainting": "0"},
            {"sd_name": "b", "is_sdxl": "sometimes", "is_inpainting": "TRUE"},
        ]
    }
    with caplog.at_level(logging.WARNING, logger="novita_async"):
        page = structure(answer, ModelPage)
    a, b = page.models
    assert (a.is_sdxl, a.is_inpainting, b.is_sdxl, b.is_inpainting) == (False, False, None, True)
    assert len(caplog.records) == 1


def test_nsfw_verdicts_parse_the_same_way(caplog: pytest.LogCaptureFixture) -> None:
    def image(valid: Any) -> dict[str, Any]:
        return {"image_url": "u", "nsfw_detection_result": {"valid": valid, "confidence": "0.9"}}

    answer = {"task": {"task_id": "t"}, "images": [image("false"), image("True"), image("?")],
              "extra": {"enable_nsfw_detection": "1"}}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="novita_async"):
        result = structure(answer, TaskResult)
    verdicts = [i.nsfw_detection_result.valid for i in result.images if i.nsfw_detection_result]
    assert verdicts == [False, True, None]
    assert result.extra.enable_nsfw_detection is True
    (record,) = caplog.records
    assert "NSFWDetectionResult.valid" in record.getMessage()


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
def test_an_answer_flag_is_true_false_or_none_and_only_the_known_spellings_parse(
    value: Any,
) -> None:
    parsed = model_with("is_sdxl", value).is_sdxl
    text = value.strip().lower() if isinstance(value, str) else None
    if value is True or text in ("true", "1") or (type(value) in (int, float) and value == 1):
        assert parsed is True
    elif value is False or text in ("false", "0") or (type(value) in (int, float) and value == 0):
        assert parsed is False
    else:
        assert parsed is None


@pytest.mark.parametrize(
    ("value", "parsed"), [*((v, True) for v in TRUE), *((v, False) for v in FALSE)]
)
def test_a_plain_bool_takes_the_same_spellings(value: Any, parsed: bool) -> None:
    assert converter.structure(value, bool) is parsed


@pytest.mark.parametrize("value", DRIFTED, ids=repr)
def test_a_plain_bool_refuses_anything_else(value: Any) -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        converter.structure(value, bool)


@pytest.mark.emulator(drifted_model_flags=True)
async def test_a_listing_with_drifted_flags_reads_each_as_it_means(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    truth = {entry["sd_name"]: entry["is_sdxl"] for entry in CATALOG}
    async with NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as c:
        with caplog.at_level(logging.WARNING, logger="novita_async"):
            listed = [m async for m in c.list_models(types=None, is_sdxl=None, page_size=4)]
            sd15 = [m.sd_name async for m in c.list_models(is_sdxl=False)]
    assert {m.sd_name: m.is_sdxl for m in listed} == truth  # "FALSE", "0"... are False
    assert False in truth.values() and sd15 == [n for n, sdxl in truth.items() if not sdxl]
    assert all(m.is_inpainting is None for m in listed)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(listed) + len(sd15)
    assert all(text.startswith("Model.is_inpainting: 'unknown' ") for text in warned)
