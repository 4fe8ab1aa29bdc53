"""The v3 image requests (txt2img, img2img, inpainting, upscale): every documented range and enum
checked when built, wrapped bodies with unset fields omitted and inputs placed by name, strict
``from_dict``, and both shapes of a submission's answer."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest

from novita_async import InvalidResponseError, ValidationError
from novita_async._converter import converter, structure, submitted_task_id
from novita_async._models import (
    TASKS,
    ImageTaskRequest,
    Img2ImgRequest,
    InpaintingRequest,
    Txt2ImgRequest,
    UpscaleRequest,
)

BASE = {"model_name": "m.safetensors", "prompt": "a cat"}


def txt2img(**fields: Any) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**BASE, **fields})


def test_each_type_names_its_task_endpoint_and_inputs() -> None:
    described = {
        name: (cls.task, cls.endpoint, [slot.name for slot in cls.inputs])
        for name, cls in TASKS.items()
    }
    assert described == {
        "txt2img": ("txt2img", "/v3/async/txt2img", []),
        "img2img": (
            "img2img",
            "/v3/async/img2img",
            ["image", "controlnet.units[].image", "ip_adapters[].image"],
        ),
        "inpainting": ("inpainting", "/v3/async/inpainting", ["image", "mask_image"]),
        "upscale": ("upscale", "/v3/async/upscale", ["image"]),
    }
    limits = {
        cls.task: [(s.limits.max_bytes, s.limits.max_pixels) for s in cls.inputs]
        for cls in TASKS.values()
    }
    mb, mp = 1024 * 1024, 4096 * 4096
    assert limits["img2img"] == [(10 * mb, mp)] * 3
    assert limits["inpainting"] == [(30 * mb, mp)] * 2
    upscale = UpscaleRequest.inputs[0].limits
    assert (upscale.max_bytes, upscale.max_width, upscale.max_height) == (30 * mb, 2048, 2048)
    assert InpaintingRequest.inputs[1].same_size_as == "image"


def test_txt2img_body_is_wrapped_and_omits_unset_fields() -> None:
    assert txt2img().body({}) == {
        "request": {
            "model_name": "m.safetensors",
            "prompt": "a cat",
            "width": 512,
            "height": 512,
            "image_num": 1,
            "steps": 20,
            "guidance_scale": 7.5,
            "sampler_name": "Euler a",
        }
    }
    full = txt2img(
        negative_prompt="dog",
        seed=-1,
        sd_vae="vae.pt",
        clip_skip=2,
        image_num=8,
        loras=[{"model_name": "l", "strength": 0.7}],
        embeddings=[{"model_name": "e"}],
        hires_fix={"target_width": 1024, "target_height": 1024, "strength": 0.5},
        refiner={"switch_at": 0.5},
        enable_transparent_background=True,
        restore_faces=False,
        extra={
            "response_image_type": "png",
            "enable_nsfw_detection": True,
            "nsfw_detection_level": 2,
            "webhook": {"url": "https://h/w"},
        },
    )
    body = json.loads(json.dumps(full.body({})))
    assert set(body) == {"extra", "request"}
    assert body["extra"] == {
        "response_image_type": "png",
        "enable_nsfw_detection": True,
        "nsfw_detection_level": 2,
        "webhook": {"url": "https://h/w"},
    }
    request = body["request"]
    assert request["loras"] == [{"model_name": "l", "strength": 0.7}]
    assert request["embeddings"] == [{"model_name": "e"}]
    assert request["hires_fix"] == {"target_width": 1024, "target_height": 1024, "strength": 0.5}
    assert request["refiner"] == {"switch_at": 0.5}
    assert (request["restore_faces"], request["enable_transparent_background"]) == (False, True)
    assert "extra" not in request and None not in request.values()


def test_img2img_places_each_input_by_name() -> None:
    request = Img2ImgRequest(
        **BASE,
        strength=0.4,
        controlnet={
            "units": [
                {"model_name": "control_v11p_sd15_canny", "strength": 1, "preprocessor": "canny"},
                {
                    "model_name": "control_v11f1p_sd15_depth",
                    "strength": 0.5,
                    "guidance_start": 0,
                    "guidance_end": 0.8,
                },
            ]
        },
        ip_adapters=[{"model_name": "ip-adapter_sd15.bin", "strength": 0.6}],
    )
    names = request.input_names()
    assert names == (
        "image",
        "controlnet.units[0].image",
        "controlnet.units[1].image",
        "ip_adapters[0].image",
    )
    body = request.body({name: f"B64-{i}" for i, name in enumerate(names)})["request"]
    assert body["image_base64"] == "B64-0"
    units = body["controlnet"]["units"]
    assert [unit["image_base64"] for unit in units] == ["B64-1", "B64-2"]
    assert units[0] == {
        "model_name": "control_v11p_sd15_canny",
        "strength": 1,
        "preprocessor": "canny",
        "image_base64": "B64-1",
    }
    assert body["ip_adapters"] == [
        {"model_name": "ip-adapter_sd15.bin", "strength": 0.6, "image_base64": "B64-3"}
    ]
    assert body["strength"] == 0.4
    # The model itself holds no base64: building the body left it as it was.
    assert "B64" not in repr(request)


def test_inpainting_and_upscale_bodies() -> None:
    inpaint = InpaintingRequest(
        **BASE,
        mask_blur=4,
        inpainting_full_res=1,
        inpainting_full_res_padding=32,
        inpainting_mask_invert=0,
        initial_noise_multiplier=1.5,
        strength=0.9,
    )
    body = inpaint.body({"image": "I", "mask_image": "M"})["request"]
    assert (body["image_base64"], body["mask_image_base64"]) == ("I", "M")
    assert "width" not in body and body["initial_noise_multiplier"] == 1.5
    upscale = UpscaleRequest(
        model_name="4x-UltraSharp", scale_factor=4, extra={"response_image_type": "webp"}
    )
    assert upscale.body({"image": "I"}) == {
        "extra": {"response_image_type": "webp"},
        "request": {"model_name": "4x-UltraSharp", "scale_factor": 4, "image_base64": "I"},
    }
    assert (upscale.images_out, upscale.image_type, inpaint.images_out) == (1, "webp", 1)


@pytest.mark.parametrize(
    ("images", "field"),
    [
        ({}, "images['image']"),
        ({"image": ""}, "images['image']"),
        ({"image": "I", "mask_image": "M"}, "images"),
        ({"image": "I", "controlnet.units[0].image": "C"}, "images"),
    ],
)
def test_body_refuses_missing_or_unknown_inputs_without_echoing_them(
    images: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        UpscaleRequest(model_name="4x-UltraSharp").body(images)
    assert caught.value.field == field
    assert "'I'" not in str(caught.value) and "'C'" not in str(caught.value)


@pytest.mark.parametrize(
    ("cls", "fields", "field"),
    [
        (Txt2ImgRequest, {"width": 127}, "width"),
        (Txt2ImgRequest, {"height": 2049}, "height"),
        (Txt2ImgRequest, {"image_num": 9}, "image_num"),
        (Txt2ImgRequest, {"image_num": 0}, "image_num"),
        (Txt2ImgRequest, {"steps": 101}, "steps"),
        (Txt2ImgRequest, {"guidance_scale": 30.5}, "guidance_scale"),
        (Txt2ImgRequest, {"seed": -2}, "seed"),
        (Txt2ImgRequest, {"clip_skip": 13}, "clip_skip"),
        (Txt2ImgRequest, {"prompt": ""}, "prompt"),
        (Txt2ImgRequest, {"prompt": "x" * 1025}, "prompt"),
        (Txt2ImgRequest, {"negative_prompt": "x" * 1025}, "negative_prompt"),
        (Txt2ImgRequest, {"sampler_name": ""}, "sampler_name"),
        (Txt2ImgRequest, {"steps": True}, "steps"),
        (Txt2ImgRequest, {"loras": [{"model_name": "l", "strength": 1.5}]}, "loras[0].strength"),
        (Txt2ImgRequest, {"loras": [{"model_name": "l", "strength": 1}] * 6}, "loras"),
        (Txt2ImgRequest, {"embeddings": [{"model_name": "e"}] * 6}, "embeddings"),
        (
            Txt2ImgRequest,
            {"hires_fix": {"target_width": 4097, "target_height": 512, "strength": 0.5}},
            "hires_fix.target_width",
        ),
        (
            Txt2ImgRequest,
            {
                "hires_fix": {
                    "target_width": 512,
                    "target_height": 512,
                    "strength": 0.5,
                    "upscaler": "x",
                }
            },
            "hires_fix.upscaler",
        ),
        (
            Txt2ImgRequest,
            {"hires_fix": {"target_width": 512, "target_height": 512}},
            "hires_fix.strength",
        ),
        (Txt2ImgRequest, {"refiner": {"switch_at": 1.1}}, "refiner.switch_at"),
        (
            Txt2ImgRequest,
            {"enable_transparent_background": True, "extra": {"response_image_type": "jpeg"}},
            "enable_transparent_background",
        ),
        (Txt2ImgRequest, {"extra": {"response_image_type": "gif"}}, "extra.response_image_type"),
        (Txt2ImgRequest, {"extra": {"nsfw_detection_level": 3}}, "extra.nsfw_detection_level"),
        (
            Txt2ImgRequest,
            {
                "extra": {
                    "webhook": {
                        "url": "https://h",
                        "test_mode": {"enabled": True, "return_task_status": "DONE"},
                    }
                }
            },
            "extra.webhook.test_mode.return_task_status",
        ),
        (Txt2ImgRequest, {"sd_vae": " "}, "sd_vae"),
        (Txt2ImgRequest, {"restore_faces": "yes"}, "restore_faces"),
        (Img2ImgRequest, {"strength": 1.01}, "strength"),
        (Img2ImgRequest, {"controlnet": {"units": []}}, "controlnet.units"),
        (
            Img2ImgRequest,
            {"controlnet": {"units": [{"model_name": "c", "strength": 2}]}},
            "controlnet.units[0].strength",
        ),
        (
            Img2ImgRequest,
            {"controlnet": {"units": [{"model_name": "c", "strength": 1, "preprocessor": "hed"}]}},
            "controlnet.units[0].preprocessor",
        ),
        (
            Img2ImgRequest,
            {"controlnet": {"units": [{"model_name": "c", "strength": 1, "guidance_end": 1.5}]}},
            "controlnet.units[0].guidance_end",
        ),
        (
            Img2ImgRequest,
            {"ip_adapters": [{"model_name": "ip.bin", "strength": 1}]},
            "ip_adapters[0].model_name",
        ),
        (
            Img2ImgRequest,
            {"ip_adapters": [{"model_name": "ip-adapter_sd15.bin", "strength": 1}] * 2},
            "ip_adapters",
        ),
        (InpaintingRequest, {"mask_blur": 65}, "mask_blur"),
        (InpaintingRequest, {"inpainting_full_res": 2}, "inpainting_full_res"),
        (InpaintingRequest, {"inpainting_full_res_padding": 257}, "inpainting_full_res_padding"),
        (InpaintingRequest, {"inpainting_mask_invert": -1}, "inpainting_mask_invert"),
        (InpaintingRequest, {"initial_noise_multiplier": 1.6}, "initial_noise_multiplier"),
        (InpaintingRequest, {"width": 512}, "width"),
    ],
)
def test_out_of_range_fields_are_refused_by_path(
    cls: type[ImageTaskRequest], fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        cls.from_dict({**BASE, **fields})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scale_factor": 1}, "scale_factor"),
        ({"scale_factor": 4.01}, "scale_factor"),
        ({"scale_factor": float("nan")}, "scale_factor"),
        ({"scale_factor": "2"}, "scale_factor"),
        ({"model_name": "Latent"}, "model_name"),
        ({"prompt": "p"}, "prompt"),
        ({"image_num": 2}, "image_num"),
    ],
)
def test_upscale_ranges(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UpscaleRequest.from_dict({"model_name": "RealESRNet_x4plus", **fields})
    assert caught.value.field == field


def test_the_ends_of_each_range_are_accepted() -> None:
    txt2img(
        width=128,
        height=2048,
        image_num=8,
        steps=100,
        guidance_scale=1,
        seed=-1,
        clip_skip=12,
        loras=[{"model_name": "l", "strength": 0}] * 5,
    )
    UpscaleRequest(model_name="RealESRGAN_x4plus_anime_6B", scale_factor=1.01)
    UpscaleRequest(model_name="RealESRGAN_x4plus_anime_6B", scale_factor=4)
    InpaintingRequest(
        **BASE, mask_blur=0, inpainting_full_res_padding=256, initial_noise_multiplier=0
    )


def test_required_fields_have_no_default_model() -> None:
    for cls, fields in (
        (Txt2ImgRequest, {"prompt": "p"}),
        (Txt2ImgRequest, {"model_name": "m"}),
        (UpscaleRequest, {}),
    ):
        with pytest.raises(ValidationError, match="is required"):
            cls.from_dict(fields)


def test_an_undocumented_sampler_is_sent_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="novita_async"):
        request = txt2img(model_name="sd3_base_medium.safetensors", sampler_name="FlowMatchEuler")
    assert request.body({})["request"]["sampler_name"] == "FlowMatchEuler"
    assert "FlowMatchEuler" in caplog.text and "not one of the documented" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="novita_async"):
        txt2img(sampler_name="DPM++ 2M Karras")
    assert caplog.text == ""


def test_from_dict_is_strict_and_merges_defaults() -> None:
    with pytest.raises(ValidationError) as caught:
        Txt2ImgRequest.from_dict({**BASE, "cfg_scale": 7})
    assert (caught.value.field, caught.value.allowed) == ("cfg_scale", "unknown field")
    with pytest.raises(ValidationError) as caught:
        Txt2ImgRequest.from_dict({**BASE, "extra": {"webhook": {"urll": "x"}}})
    assert caught.value.field == "extra.webhook.urll"
    with pytest.raises(ValidationError):
        Txt2ImgRequest.from_dict(["not", "a", "mapping"])  # type: ignore[arg-type]
    request = Txt2ImgRequest.from_dict(
        {**BASE, "extra": {"enable_nsfw_detection": True}},
        defaults={"steps": 30, "extra": {"response_image_type": "webp"}},
    )
    assert request.steps == 30
    assert request.body({})["extra"] == {
        "response_image_type": "webp",
        "enable_nsfw_detection": True,
    }
    # Null in a job file means unset.
    assert Txt2ImgRequest.from_dict({**BASE, "seed": None}).seed is None


def test_requests_are_frozen_and_the_converter_round_trips_them() -> None:
    request = Img2ImgRequest(**BASE, controlnet={"units": [{"model_name": "c", "strength": 1}]})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.steps = 3  # type: ignore[misc]
    fields = converter.unstructure(request)
    assert None not in fields.values() and "image_base64" not in json.dumps(fields)
    assert structure(fields, Img2ImgRequest) == request
    with pytest.raises(InvalidResponseError):
        structure({**fields, "steps": 0}, Img2ImgRequest)


@pytest.mark.parametrize(
    "answer",
    [
        {"task_id": "t-1"},
        {"code": 0, "msg": "", "data": {"task_id": "t-1"}},
        {"task_id": "t-1", "data": {"task_id": "other"}},
    ],
)
def test_both_submission_answer_shapes(answer: dict[str, Any]) -> None:
    assert submitted_task_id(answer) == "t-1"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({}, "no task_id"),
        ([], "no task_id"),
        ({"task_id": ""}, "no task_id"),
        ({"data": {"task_id": 7}}, "no task_id"),
        ({"code": 3, "msg": "quota", "data": None}, "code 3: quota"),
    ],
)
def test_a_submission_answer_without_a_task_id_is_refused(answer: Any, says: str) -> None:
    with pytest.raises(InvalidResponseError, match=says):
        submitted_task_id(answer)
