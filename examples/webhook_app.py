"""Learning that a task ended by webhook, in an aiohttp web app.

The app mounts a WebhookReceiver next to its own routes. Its handler submits a task whose request
names the receiver's URL, then waits for the task's event, polling only if none comes within
``event_grace`` seconds (a lost event costs polls, never the task), downloads and answers.

    python examples/webhook_app.py          # against the emulator, one request, then exits
    python examples/webhook_app.py --serve  # keep serving on http://127.0.0.1:8080

Against the real service the receiver must be reachable from the internet: set
WEBHOOK_PUBLIC_URL to this app's public origin (e.g. https://my.app, or a tunnel to port 8080).
The receiver's path holds its secret token: keep the app's access log private.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from _support import client, sample_pictures
from aiohttp import web

from novita_async import (
    Extra,
    InstantIDRequest,
    NovitaClient,
    NovitaError,
    Webhook,
    WebhookReceiver,
)

CLIENT = web.AppKey("client", NovitaClient)
RECEIVER = web.AppKey("receiver", WebhookReceiver)
FOLDER = web.AppKey("folder", Path)


async def generate(request: web.Request) -> web.Response:
    body = await request.json()
    novita, receiver, folder = request.app[CLIENT], request.app[RECEIVER], request.app[FOLDER]
    # Where the service can reach this app: given, or (emulator) the address we were reached at.
    public = os.environ.get("WEBHOOK_PUBLIC_URL") or str(request.url.origin())
    accepted = receiver.stats().accepted
    try:
        face, ref = await novita.upload_assets([folder / "face-0.png", folder / "ref-0.png"])
        task_id = await novita.submit_instant_id(
            InstantIDRequest(
                prompt=body["prompt"], face_image_assets_ids=[face], ref_image_assets_ids=[ref],
                width=512, height=512, extra=Extra(webhook=Webhook(url=receiver.url(public))),
            )
        )  # fmt: skip
        result = await novita.wait_for_task(task_id, timeout=120, events=receiver, event_grace=30)
        files = await novita.download_images(result, folder / "out", stem=f"{task_id}-")
    except NovitaError as exc:  # the service said no: tell the caller why
        return web.json_response({"error": exc.reason, "message": str(exc)}, status=502)
    by = "webhook" if receiver.stats().accepted > accepted else "polling"
    return web.json_response({"task_id": task_id, "by": by, "files": [str(p) for p in files]})


def make_app(folder: Path) -> web.Application:
    app = web.Application()
    app[FOLDER] = folder
    receiver = app[RECEIVER] = WebhookReceiver()  # a fresh secret path each start
    app.add_subapp(receiver.path_prefix, receiver.app)  # POST /novita/<token>

    async def novita_client(app: web.Application) -> AsyncIterator[None]:
        async with client() as shared:  # opened with the app, closed with it
            app[CLIENT] = shared
            yield

    app.cleanup_ctx.append(novita_client)
    app.router.add_post("/generate", generate)
    return app


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sample_pictures(folder)
        # No access log: it would write the receiver's secret path.
        runner = web.AppRunner(make_app(folder), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 8080 if "--serve" in sys.argv else 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            if "--serve" in sys.argv:
                print(f"serving on http://127.0.0.1:{port}/generate; Ctrl-C stops")
                await asyncio.Event().wait()
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/generate"
                async with http.post(url, json={"prompt": "a portrait, studio light"}) as answer:
                    print(answer.status, await answer.json())
                    answer.raise_for_status()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
