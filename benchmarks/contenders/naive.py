"""A naive asyncio loop, as a user might first write it.

``asyncio.gather`` over every job at once, aiohttp, each job uploading its own files, a fixed 1 s
poll, whole images read into memory. No retries: a 429 or a 5xx loses the job.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp

from benchmarks._spec import RunReport, connection, emit, load_spec


async def main() -> None:
    spec = load_spec()
    base, assets, key = connection()
    auth = {"Authorization": f"Bearer {key}"}
    report = RunReport()
    os.makedirs(spec.out_dir, exist_ok=True)
    async with aiohttp.ClientSession() as session:

        async def upload(path: str) -> str:
            with open(path, "rb") as f:
                async with session.put(assets, data=f.read()) as r:
                    r.raise_for_status()
                    return str((await r.json())["assets_id"])

        async def one(index: int, face: str, ref: str) -> None:
            try:
                body = spec.body(await upload(face), await upload(ref), index)
                async with session.post(
                    base + "/v3/async/instant-id", json=body, headers=auth
                ) as r:
                    r.raise_for_status()
                    task_id = (await r.json())["task_id"]
                while True:
                    await asyncio.sleep(1.0)
                    async with session.get(
                        base + "/v3/async/task-result", params={"task_id": task_id}, headers=auth
                    ) as r:
                        r.raise_for_status()
                        result = await r.json()
                    if result["task"]["status"] in ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"):
                        break
                if result["task"]["status"] != "TASK_STATUS_SUCCEED":
                    raise RuntimeError("task failed")
                for n, image in enumerate(result["images"]):
                    async with session.get(image["image_url"]) as r:
                        r.raise_for_status()
                        data = await r.read()
                    path = os.path.join(spec.out_dir, f"{index}-{n}.{image['image_type']}")
                    with open(path, "wb") as f:
                        f.write(data)
                report.success()
            except Exception as exc:
                report.failure(exc)

        await asyncio.gather(*(one(*job) for job in spec.job_inputs()))
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
