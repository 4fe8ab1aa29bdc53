"""The testing kit's v3 example does what its docstring says: per-route counts, no unknown
field, no duplicate; and the kit's emulator has the documented route limits on request."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from novita_async import Img2ImgRequest, RateLimitError, RetryPolicy, Txt2ImgRequest
from novita_async.emulator import DOCUMENTED_IMAGES_PER_MINUTE
from novita_async.testing import emulated, kit_config


async def test_the_docstring_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buffer, "PNG")
    (tmp_path / "cat.png").write_bytes(buffer.getvalue())
    monkeypatch.chdir(tmp_path)
    async with emulated() as kit:
        request = Img2ImgRequest(model_name="m.safetensors", prompt="a cat", strength=0.6)
        task_id = await kit.client.submit(request, images={"image": "cat.png"})
        stats = kit.stats()
        assert stats.submissions_by_route == {"img2img": 1}
        assert stats.unknown_fields == {}
        assert stats.duplicate_submissions == 0
        assert await kit.emulator.wait_task(task_id) == "TASK_STATUS_SUCCEED"
        assert stats.credit_balance < kit_config().credit_balance


async def test_the_kit_limits_each_route_as_documented_on_request() -> None:
    config = kit_config(route_images_per_minute=DOCUMENTED_IMAGES_PER_MINUTE)
    async with emulated(config, retry=RetryPolicy(attempts=1)) as kit:
        await kit.client.submit(Txt2ImgRequest(model_name="m", prompt="p", image_num=8))
        await kit.client.submit(Txt2ImgRequest(model_name="m", prompt="p", image_num=8))
        with pytest.raises(RateLimitError):
            await kit.client.submit(Txt2ImgRequest(model_name="m", prompt="p", image_num=5))
        assert kit.stats().submissions_by_route == {"txt2img": 2}
