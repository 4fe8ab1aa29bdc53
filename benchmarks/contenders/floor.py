"""The floor: a bare aiohttp flow making only the necessary requests.

Each distinct file uploaded once, then per job: submit, one poll timed by the known task time (then
by ``eta`` if not done), download, ``os.replace``. No validation, journal, retries or progress: the
CPU lower bound of this work on the machine at hand. Each answer's status is checked, though: a
job whose image GET was refused is a failure, not an error page saved as its image.
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
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def upload(path: str) -> str:
            with open(path, "rb") as f:
                data = f.read()
            async with session.put(assets, data=data) as r:
                r.raise_for_status()
                return str((await r.json())["assets_id"])

        # Only the files some job uses, each once: a bare flow knows its inputs up front.
        pairs = min(spec.jobs, len(spec.faces) * len(spec.refs))
        files = sorted({path for _, *paths in spec.job_inputs(pairs) for path in paths})
        try:
            ids = dict(zip(files, await asyncio.gather(*map(upload, files)), strict=True))
        except Exception as exc:  # no retries: a failed upload loses every job
            for _ in range(spec.jobs):
                report.failure(exc)
            emit(report)
            return
        slots = asyncio.Semaphore(spec.concurrency)

        async def one(index: int, face: str, ref: str) -> None:
            async with slots:
                try:
                    body = spec.body(ids[face], ids[ref], index)
                    async with session.post(
                        base + "/v3/async/instant-id", json=body, headers=auth
                    ) as r:
                        r.raise_for_status()
                        task_id = (await r.json())["task_id"]
                    # Just past the known task time: polling on the dot races the task's end,
                    # and a lost race costs a second poll a whole second later (eta is whole s).
                    await asyncio.sleep(spec.task_seconds_hint * 1.02 + 0.02)
                    while True:
                        async with session.get(
                            base + "/v3/async/task-result",
                            params={"task_id": task_id},
                            headers=auth,
                        ) as r:
                            r.raise_for_status()
                            result = await r.json()
                        status = result["task"]["status"]
                        if status == "TASK_STATUS_SUCCEED":
                            break
                        if status == "TASK_STATUS_FAILED":
                            raise RuntimeError("task failed")
                        await asyncio.sleep(max(float(result["task"].get("eta") or 0), 0.05))
                    for n, image in enumerate(result["images"]):
                        final = os.path.join(spec.out_dir, f"{index}-{n}.{image['image_type']}")
                        async with session.get(image["image_url"]) as r:
                            # An error page saved as the image would count as a success.
                            r.raise_for_status()
                            with open(final + ".part", "wb") as f:
                                async for chunk in r.content.iter_chunked(65536):
                                    f.write(chunk)
                        os.replace(final + ".part", final)
                    report.success()
                    if spec.end_to_disk:
                        report.saved(task_id)
                except Exception as exc:
                    report.failure(exc)

        await asyncio.gather(*(one(*job) for job in spec.job_inputs()))
    emit(report)


if __name__ == "__main__":
    asyncio.run(main())
