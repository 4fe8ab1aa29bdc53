"""The official synchronous SDK (``novita-client``) in a thread pool of the same width.

Its asset host is hard-coded (``requests.put("https://assets.novitai.com/image", ...)``), so that
one URL is redirected to the emulator's asset origin; everything else is the SDK as shipped: it
uploads both pictures of every job (re-encoded as JPEG), polls every 0.5 s, and retries nothing
but uploads and downloads.

Two things the SDK does not check are checked here, so a job is counted done only when its image
really is on disk: its downloader swallows failures (an image can go missing) and keeps the body
of an error answer as if it were the image.

novita-client 0.7.1 does not pin ``dataclass-wizard``; with dataclass-wizard 1.0 it cannot parse a
task result whose ``debug_info`` times are empty strings (as the real service sends while a task
runs), so every job fails. The harness runs it only with ``dataclass-wizard<1``
(see :func:`usable`).
"""

from __future__ import annotations

import base64
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

_HARD_CODED_ASSETS = "https://assets.novitai.com/image"
_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG", "webp": b"RIFF"}


def usable() -> str | None:
    """None if the SDK can run here, else why not (without importing it)."""
    try:
        metadata.version("novita-client")
        wizard = metadata.version("dataclass-wizard")
    except metadata.PackageNotFoundError as missing:
        return f"{missing.name} is not installed (pip install -e '.[bench]')"
    if int(wizard.split(".")[0]) >= 1:
        return f"novita-client cannot parse task results with dataclass-wizard {wizard} (needs <1)"
    return None


def sdk_client() -> Any:
    """The SDK's client for the emulator (from the ``NOVITA_*`` variables), its hard-coded asset
    host redirected there."""
    import requests  # type: ignore[import-untyped,unused-ignore]
    from novita_client import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        NovitaClient,
    )
    from novita_client import novita as sdk_module

    from benchmarks._spec import connection

    base, assets, key = connection()
    real_put = requests.put

    def redirected_put(url: str, *args: Any, **kwargs: Any) -> Any:
        return real_put(assets if url == _HARD_CODED_ASSETS else url, *args, **kwargs)

    sdk_module.requests.put = redirected_put
    return NovitaClient(key, base_url=base)


def main() -> None:
    from benchmarks._spec import RunReport, emit, load_spec

    spec = load_spec()
    client = sdk_client()
    report = RunReport()
    report_lock = threading.Lock()
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
                steps=spec.steps_for(index),
                seed=index,
                guidance_scale=7.5,
                sampler_name="Euler",
                response_image_type=spec.image_type,
                controlnets=[],
                loras=[],
            )
        except Exception as exc:
            problem: BaseException | str | None = exc
        else:
            problem = save(index, result)
        with report_lock:  # the report is shared by the pool's threads
            if problem:
                report.failure(problem)
            else:
                report.success()

    def save(index: int, result: Any) -> str | None:
        """Write the images of a finished task; or say why the job is not done."""
        if result.task.status.name != "TASK_STATUS_SUCCEED":
            return "task failed"
        encoded = result.images_encoded or []
        if len(encoded) != len(result.images or []):
            return "image missing"
        for n, text in enumerate(encoded):
            data = base64.b64decode(text)
            if not data.startswith(_MAGIC.get(spec.image_type, b"")):
                return "not an image"
            with open(os.path.join(spec.out_dir, f"{index}-{n}.{spec.image_type}"), "wb") as f:
                f.write(data)
        return None

    with ThreadPoolExecutor(spec.concurrency) as pool:
        list(pool.map(lambda job: one(*job), spec.job_inputs()))
    emit(report)


if __name__ == "__main__":
    main()
