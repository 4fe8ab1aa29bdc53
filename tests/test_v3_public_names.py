"""The v3 image tasks' names are the package's: importable from ``novita_async``, labelled as
its own, and the same objects the job file and the client use."""

from __future__ import annotations

import pickle

import novita_async
from novita_async import _client, _models

V3_NAMES = (
    "Txt2ImgRequest", "Img2ImgRequest", "InpaintingRequest", "UpscaleRequest",
    "ImageTaskRequest", "Embedding", "HiresFix", "Refiner", "ImageControlNet",
    "ImageControlNetUnit", "IPAdapter", "InputSlot", "InputLimits", "TaskOutcome",
)  # fmt: skip


def test_the_v3_names_are_exported_as_the_packages() -> None:
    for name in (*V3_NAMES, "ImageInput", "TaskRequest", "TASKS", "TASK_NAMES"):
        assert name in novita_async.__all__, name
    assert {getattr(novita_async, name).__module__ for name in V3_NAMES} == {"novita_async"}
    assert novita_async.TASKS is _models.TASKS and novita_async.TASK_NAMES is _models.TASK_NAMES
    assert novita_async.TaskOutcome is _client.TaskOutcome
    assert set(novita_async.TASKS.values()) == {
        novita_async.Txt2ImgRequest,
        novita_async.Img2ImgRequest,
        novita_async.InpaintingRequest,
        novita_async.UpscaleRequest,
    }
    assert ("instant-id", *novita_async.TASKS) == novita_async.TASK_NAMES


def test_a_v3_request_pickles_and_reads_as_the_packages() -> None:
    unit = novita_async.ImageControlNetUnit(model_name="control_v11p_sd15_canny", strength=0.5)
    request = novita_async.Img2ImgRequest(
        model_name="m.safetensors",
        prompt="a cat",
        controlnet=novita_async.ImageControlNet(units=(unit,)),
    )
    assert pickle.loads(pickle.dumps(request)) == request
    assert repr(request).startswith("Img2ImgRequest(")
    assert [slot.name for slot in request.inputs][:1] == ["image"]
