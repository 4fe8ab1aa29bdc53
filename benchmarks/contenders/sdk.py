"""The official synchronous SDK (``novita-client``) in a thread pool of the same width.

Its asset host is hard-coded (``requests.put("https://assets.novitai.com/image", ...)``), so that
one URL is redirected to the emulator's asset origin; everything else is the SDK as shipped.
"""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests  # type: ignore[import-untyped]
from novita_client import NovitaClient  # type: ignore[import-not-found]
from novita_client import novita as sdk_module

from benchmarks._spec import RunReport, connection, emit, load_spec

_HARD_CODED_ASSETS = "https://assets.novitai.com/image"


def main() -> None:
    spec = load_spec()
    base, assets, key = connection()
    real_put = requests.put

    def redirected_put(url: str, *args: Any, **kwargs: Any) -> Any:
        return real_put(assets if url == _HARD_CODED_ASSETS else url, *args, **kwargs)

    sdk_module.requests.put = redirected_put
    client = NovitaClient(key, base_url=base)
    report = RunReport()
    os.makedirs(spec.out_dir, exist_ok=True)

    def one(index: int, face: str, ref: str) -> None:
        try:
            result = client.instant_id(
                face_images=[face],
                ref_images=[ref],
                model_name="sdxlUnstableDiffusers_v8HEAVENSWRATH_133813.safetensors",
                prompt=f"benchmark job {index}",
                width=spec.width,
                height=spec.height,
                steps=spec.steps,
                seed=index,
                guidance_scale=7.5,
                sampler_name="Euler",
                response_image_type=spec.image_type,
                controlnets=[],
                loras=[],
            )
            if result.task.status.name != "TASK_STATUS_SUCCEED":
                raise RuntimeError("task failed")
            for n, data in enumerate(result.images_encoded or []):
                path = os.path.join(spec.out_dir, f"{index}-{n}.{spec.image_type}")
                with open(path, "wb") as f:
                    f.write(base64.b64decode(data))
            report.success()
        except Exception as exc:
            report.failure(exc)

    with ThreadPoolExecutor(spec.concurrency) as pool:
        list(pool.map(lambda job: one(*job), spec.job_inputs()))
    emit(report)


if __name__ == "__main__":
    main()
