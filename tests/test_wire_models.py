"""Models and the converter: documented ranges, exact wire names, lenient answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import (
    ControlNet,
    ControlNetUnit,
    Extra,
    InstantIDRequest,
    LoRA,
    TaskResult,
    TaskStatus,
    ValidationError,
    Webhook,
    WebhookTestMode,
)
from novita_async._converter import converter, structure, unstructure_request
from novita_async._exceptions import InvalidResponseError
from novita_async._models import ModelPage
from novita_async._spec import NUMERIC_FIELDS, REQUIRED_FIELDS

# The seed document's example request body, verbatim.
SEED_REQUEST = {
    "extra": {"response_image_type": "jpeg"},
    "model_name": "sdxlUnstableDiffusers_v11_216694.safetensors",
    "face_image_assets_ids": [
        "cjIvbm92aXRhLWFpLWFzc2V0L2ltYWdlLzR4WUh4SEFyTUV4UlhTTkN5VEtqa2ppZjNoUDQ2ZkVQ"
    ],
    "ref_image_assets_ids": [
        "cjIvbm92aXRhLWFpLWFzc2V0L2ltYWdlL1NITkRUejI3SmREc25hV3l5NU1XUlhySGhLVGp3clFq"
    ],
    "prompt": "a young woman with perfect figure, wearing a floral dress",
    "negative_prompt": "realistic, photo-realistic, bad quality, bad anatomy, worst quality, low "
    "quality, lowres, extra fingers, blur, blurry, ugly, wrong proportions, watermark, image "
    "artifacts, bad eyes, bad hands, bad arms",
    "loras": [{"model_name": "BoutXOval_SDXL_dim32-000005_92430.safetensors", "strength": 0.8}],
    "height": 1024,
    "width": 768,
    "id_strength": 0.8,
    "adapter_strength": 0.8,
    "image_num": 1,
    "steps": 25,
    "seed": -1,
    "guidance_scale": 7.5,
    "sampler_name": "Euler",
}

# The seed document's example task-result answer, verbatim.
SEED_ANSWER = """{
    "extra": {"seed": "1099016411", "enable_nsfw_detection": false},
    "task": {
        "task_id": "248f525b-edf9-4265-aa8a-8cf4c19bfe67",
        "task_type": "INSTANT_ID",
        "status": "TASK_STATUS_SUCCEED",
        "reason": "",
        "eta": 0,
        "progress_percent": 0
    },
    "images": [
        {
            "image_url": "https://faas-output-image.s3.ap-southeast-1.amazonaws.com/prod/248f525b-edf9-4265-aa8a-8cf4c19bfe67/de995d778d474da5aff3c724553939ff.jpeg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASVPYCN6LRCW3SOUV%2F20240224%2Fap-southeast-1%2Fs3%2Faws4_request&X-Amz-Date=20240224T121926Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&x-id=GetObject&X-Amz-Signature=8a98b59d44c39b0c82ae31d351f94663ace0cbbf57041e9d073d96d6d0e7c2f5",
            "image_url_ttl": "3600",
            "image_type": "jpeg",
            "nsfw_detection_result": null
        }
    ],
    "videos": []
}"""

# Every field the seed documents for the request body (plus the shared `extra` block's fields).
DOCUMENTED_REQUEST_FIELDS = {
    "extra", "model_name", "face_image_assets_ids", "ref_image_assets_ids", "prompt", "width",
    "height", "image_num", "steps", "guidance_scale", "sampler_name", "negative_prompt",
    "controlnet", "seed", "id_strength", "adapter_strength", "loras", "clip_skip",
    "face_kps_assets_ids", "control_guidance_start", "control_guidance_end",
}  # fmt: skip
DOCUMENTED_EXTRA_FIELDS = {"response_image_type", "enable_nsfw_detection", "nsfw_detection_level",
                           "webhook"}  # fmt: skip


def wire(obj: Any) -> Any:
    """What actually goes over the wire: the JSON text, read back."""
    return json.loads(json.dumps(obj))


def build(field: str, value: object) -> object:
    if field == "nsfw_detection_level":
        return Extra(nsfw_detection_level=value)  # type: ignore[arg-type]
    return InstantIDRequest(prompt="a portrait", **{field: value})


def in_range(field: str) -> st.SearchStrategy[Any]:
    allowed, integer = NUMERIC_FIELDS[field]
    high = allowed.high if allowed.high is not None else 2**31
    if integer:
        return st.integers(int(allowed.low), int(high))
    return st.floats(allowed.low, high, allow_nan=False)


def out_of_range(field: str) -> st.SearchStrategy[Any]:
    allowed, integer = NUMERIC_FIELDS[field]
    if integer:
        below = st.integers(max_value=int(allowed.low) - 1)
        above = st.integers(min_value=int(allowed.high) + 1) if allowed.high is not None else None
    else:
        below = st.floats(max_value=allowed.low, exclude_max=True, allow_nan=False)
        above = (
            st.floats(min_value=allowed.high, exclude_min=True, allow_nan=False)
            if allowed.high is not None
            else None
        )
    return below if above is None else below | above


@pytest.mark.parametrize("field", sorted(NUMERIC_FIELDS))
@given(data=st.data())
def test_numeric_field_in_range_is_accepted_and_sent_as_given(field: str, data: Any) -> None:
    value = data.draw(in_range(field))
    built = build(field, value)
    body = wire(converter.unstructure(built))
    assert body[field] == value


@pytest.mark.parametrize("field", sorted(NUMERIC_FIELDS))
@given(data=st.data())
def test_numeric_field_out_of_range_names_field_value_and_range(field: str, data: Any) -> None:
    value = data.draw(out_of_range(field))
    with pytest.raises(ValidationError) as caught:
        build(field, value)
    allowed, _ = NUMERIC_FIELDS[field]
    message = str(caught.value)
    assert caught.value.field == field
    assert caught.value.value == value
    assert field in message
    assert repr(value)[:20] in message
    assert str(allowed) in message


@pytest.mark.parametrize("field", sorted(NUMERIC_FIELDS))
@pytest.mark.parametrize("bad", [True, "7", float("nan"), float("inf")])
def test_numeric_field_rejects_non_numbers(field: str, bad: object) -> None:
    with pytest.raises(ValidationError, match=field):
        build(field, bad)


def full_request() -> InstantIDRequest:
    return InstantIDRequest(
        prompt="a portrait, studio light",
        face_image_assets_ids=["face-1", "face-2"],
        ref_image_assets_ids=["ref-1"],
        model_name="sd_xl_base_1.0.safetensors",
        width=768,
        height=1024,
        image_num=2,
        steps=30,
        guidance_scale=5.5,
        sampler_name="DPM++ 2M Karras",
        negative_prompt="blurry",
        seed=42,
        id_strength=0.8,
        adapter_strength=0.7,
        clip_skip=2,
        face_kps_assets_ids=["kps-1", "kps-2"],
        control_guidance_start=0.1,
        control_guidance_end=0.9,
        loras=[LoRA(model_name="lora.safetensors", strength=0.6)],
        controlnet=ControlNet(
            units=[
                ControlNetUnit(
                    model_name="controlnet-openpose-sdxl-1.0", strength=0.4, preprocessor="openpose"
                )
            ]
        ),
        extra=Extra(
            response_image_type="webp",
            enable_nsfw_detection=True,
            nsfw_detection_level=1,
            webhook=Webhook(
                url="https://example.com/hook",
                test_mode=WebhookTestMode(enabled=True, return_task_status="TASK_STATUS_SUCCEED"),
            ),
        ),
    )


def test_every_documented_field_round_trips_under_its_documented_name() -> None:
    request = full_request()
    body = wire(unstructure_request(request))
    assert set(body) == DOCUMENTED_REQUEST_FIELDS
    assert set(body["extra"]) == DOCUMENTED_EXTRA_FIELDS
    assert body["loras"] == [{"model_name": "lora.safetensors", "strength": 0.6}]
    assert body["controlnet"] == {
        "units": [
            {
                "model_name": "controlnet-openpose-sdxl-1.0",
                "strength": 0.4,
                "preprocessor": "openpose",
            }
        ]
    }
    assert body["extra"]["webhook"] == {
        "url": "https://example.com/hook",
        "test_mode": {"enabled": True, "return_task_status": "TASK_STATUS_SUCCEED"},
    }
    assert body["face_kps_assets_ids"] == ["kps-1", "kps-2"]
    assert converter.structure(body, InstantIDRequest) == request


def test_unset_optional_fields_are_omitted_not_null() -> None:
    body = wire(unstructure_request(InstantIDRequest(prompt="p", face_image_assets_ids=["f"],
                                                     ref_image_assets_ids=["r"])))  # fmt: skip
    assert set(body) == set(REQUIRED_FIELDS)
    assert None not in body.values()
    extra = wire(converter.unstructure(Extra(response_image_type="png")))
    assert extra == {"response_image_type": "png"}


def test_seed_example_request_structures_and_unstructures_unchanged() -> None:
    request = converter.structure(SEED_REQUEST, InstantIDRequest)
    assert request.width == 768
    assert request.image_type == "jpeg"
    assert request.loras == (LoRA("BoutXOval_SDXL_dim32-000005_92430.safetensors", 0.8),)
    request.check_submittable()
    assert wire(unstructure_request(request)) == SEED_REQUEST


def test_seed_example_answer_parses() -> None:
    result = structure(json.loads(SEED_ANSWER), TaskResult)
    assert result.task_id == "248f525b-edf9-4265-aa8a-8cf4c19bfe67"
    assert result.status is TaskStatus.SUCCEED
    assert result.extra.seed == 1099016411
    assert result.extra.enable_nsfw_detection is False
    (image,) = result.images
    assert image.image_url_ttl == 3600
    assert image.image_type == "jpeg"
    assert image.nsfw_detection_result is None
    assert result.videos == ()


def test_answer_parsing_is_lenient_where_the_service_drifts() -> None:
    answer = {
        "task": {
            "task_id": "t1",
            "status": "TASK_STATUS_SOMETHING_NEW",
            "eta": "12",
            "progress_percent": "40.5",
            "brand_new_key": {"nested": 1},
        },
        "images": [{"image_url": "https://x/y.png", "image_url_ttl": "", "surprise": True}],
        "extra": {"seed": "7", "debug_info": {"submit_time_ms": "", "execute_time_ms": "12"}},
        "audios": [],
    }
    result = structure(answer, TaskResult)
    assert result.status is TaskStatus.UNKNOWN
    assert not result.status.is_final
    assert result.task.eta == 12.0
    assert result.task.progress_percent == 40.5
    assert result.images[0].image_url_ttl is None
    assert result.videos == ()
    assert result.extra.seed == 7
    assert result.extra.debug_info is not None
    assert result.extra.debug_info.submit_time_ms is None
    assert result.extra.debug_info.execute_time_ms == 12


@pytest.mark.parametrize(
    ("fields", "field", "allowed"),
    [
        ({"seed": "7"}, "seed", "integer"),
        ({"guidance_scale": True}, "guidance_scale", "number"),
        ({"negative_prompt": 5}, "negative_prompt", "string"),
        ({"seeds": 7}, "seeds", "unknown field"),
        ({"extra": {"webhook": {"url": "https://x", "test_mode": {"enabled": 1}}}},
         "extra.webhook.test_mode.enabled", "true or false"),
        ({"extra": {"webhook": {"url": "https://x", "test_mode": {"enabled": True, "on": 1}}}},
         "extra.webhook.test_mode.on", "unknown field"),
        ({"extra": {"webhook": {}}}, "extra.webhook.url", "required"),
        ({"controlnet": {"units": "canny"}}, "controlnet.units", "must be a list"),
        ({"loras": [{"model_name": "a", "strength": 1}, 5]}, "loras[1]", "must be an object"),
    ],
)  # fmt: skip
def test_request_fields_structure_strictly_naming_the_path(
    fields: dict[str, Any], field: str, allowed: str
) -> None:
    # The same converter that reads answers leniently (the test above) refuses these.
    with pytest.raises(ValidationError) as caught:
        InstantIDRequest.from_dict({"prompt": "p", **fields})
    assert caught.value.field == field
    assert allowed in caught.value.allowed


def test_a_request_that_is_not_an_object_is_named_by_its_class() -> None:
    with pytest.raises(ValidationError) as caught:
        InstantIDRequest.from_dict([1])  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.allowed) == ("InstantIDRequest", "must be an object")


def test_null_videos_and_missing_extra_parse() -> None:
    result = structure({"task": {"task_id": "t"}, "videos": None}, TaskResult)
    assert result.videos == ()
    assert result.images == ()
    assert result.status is TaskStatus.UNKNOWN


@pytest.mark.parametrize(
    "answer", [{"images": []}, {"task": "not an object"}, {"task": {"task_id": "t"}, "images": "x"}]
)
def test_wrong_answer_shape_is_invalid_response(answer: dict[str, Any]) -> None:
    with pytest.raises(InvalidResponseError):
        structure(answer, TaskResult)


def test_model_page_parses_cursor_and_models() -> None:
    page = structure(
        {
            "models": [
                {"id": "3", "sd_name": "a.safetensors", "type": {"name": "checkpoint"},
                 "is_sdxl": True, "tags": None, "unknown": 1}
            ],
            "pagination": {"next_cursor": "c2"},
        },
        ModelPage,
    )  # fmt: skip
    assert page.next_cursor == "c2"
    assert page.models[0].id == 3
    assert page.models[0].tags == ()
    assert structure({"models": []}, ModelPage).next_cursor == ""
