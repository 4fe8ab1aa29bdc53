"""Awaiting the client from an aiohttp web handler.

One NovitaClient lives as long as the web application (it is safe to share among every request).
The handler uploads, submits, waits and downloads without blocking the server: other requests are
served while a task runs.

    python examples/web_handler.py          # against the emulator, one request, then exits
    python examples/web_handler.py --serve  # keep serving on http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from _support import client, sample_pictures
from aiohttp import web

from novita_async import InstantIDRequest, NovitaClient, NovitaError

CLIENT = web.AppKey("client", NovitaClient)
FOLDER = web.AppKey("folder", Path)


async def generate(request: web.Request) -> web.Response:
    body = await request.json()
    folder = request.app[FOLDER]
    try:
        outcome = await request.app[CLIENT].instant_id(
            InstantIDRequest(prompt=body["prompt"], width=512, height=512),
            face_images=[folder / "face-0.png"],
            ref_images=[folder / "ref-0.png"],
            out_dir=folder / "out",
            timeout=120,
        )
    except NovitaError as exc:  # the service said no: tell the caller why
        return web.json_response({"error": exc.reason, "message": str(exc)}, status=502)
    return web.json_response(
        {"task_id": outcome.task_id, "seed": outcome.result.extra.seed,
         "files": [str(p) for p in outcome.files]}
    )  # fmt: skip


def make_app(folder: Path) -> web.Application:
    app = web.Application()
    app[FOLDER] = folder

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
        runner = web.AppRunner(make_app(folder))
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
