"""A deliberately misbehaving service on loopback: real aiohttp servers, not mocks.

Three origins: ``api`` (upload, submit, task result), ``images`` (where result URLs point) and
``elsewhere`` (a foreign origin that redirects land on). Each task id is the job's prompt, and names
how the service misbehaves for that job (see ``BEHAVIOURS``). Every request's Authorization header
is recorded per origin.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web
from PIL import Image

HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"

# behaviour -> what the job's error must be (None: the job succeeds)
BEHAVIOURS: dict[str, set[str] | None] = {
    "ok": None,
    "submit_html": {"InvalidResponseError"},  # 200 with an HTML page instead of JSON
    "submit_truncated": {"InvalidResponseError"},  # 200 with half a JSON document
    "submit_without_task_id": {"InvalidResponseError"},
    "submit_redirect_elsewhere": {"APIStatusError"},  # a 307: never followed with the key
    "result_redirect_elsewhere": {"APIStatusError"},
    "result_html": {"InvalidResponseError"},
    "result_truncated": {"InvalidResponseError"},
    "result_missing_task": {"InvalidResponseError"},  # {} instead of {"task": ...}
    "result_list": {"InvalidResponseError"},  # a JSON list where an object belongs
    "result_unknown_status": {"TaskTimeoutError"},  # a status never seen: polled till the deadline
    "result_succeeded_without_images": {"InvalidResponseError"},
    "image_file_scheme": {"ValidationError"},  # image_url file:///etc/passwd
    "image_ftp_scheme": {"ValidationError"},  # image_url ftp://...
    # A 302 to file:///etc/passwd fails as a connection error: transient, so the job is tried a
    # few rounds, then ends retryable.
    "image_redirect_to_file": {"RetriesExhaustedError"},
    "image_type_escape": None,  # image_type "../../evil": the file is still OUT/<id>_0.png
    "image_redirect_elsewhere": None,  # a 302 to another origin: followed, without credentials
}


def png_bytes(shade: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 30, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@attrs.define
class Origin:
    url: str = ""
    authorizations: list[str | None] = attrs.field(factory=list)
    paths: list[str] = attrs.field(factory=list)


@attrs.define
class Misbehaving:
    api: Origin = attrs.field(factory=Origin)
    images: Origin = attrs.field(factory=Origin)
    elsewhere: Origin = attrs.field(factory=Origin)
    submissions: int = 0

    def _record(self, origin: Origin, request: web.Request) -> None:
        origin.authorizations.append(request.headers.get("Authorization"))
        origin.paths.append(request.path)

    # --- api ------------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        self._record(self.api, request)
        await request.read()
        return web.json_response({"assets_id": f"asset-{len(self.api.paths)}"})

    async def submit(self, request: web.Request) -> web.StreamResponse:
        self._record(self.api, request)
        self.submissions += 1
        behaviour = (await request.json())["prompt"]
        if behaviour == "submit_html":
            return web.Response(text=HTML, content_type="text/html")
        if behaviour == "submit_truncated":
            return web.Response(text='{"task_id": "tru', content_type="application/json")
        if behaviour == "submit_redirect_elsewhere":
            raise web.HTTPTemporaryRedirect(f"{self.elsewhere.url}/steal")
        if behaviour == "submit_without_task_id":
            return web.json_response({"task": {}})
        return web.json_response({"task_id": behaviour})

    def _success(self, task_id: str, image_url: str, image_type: str = "png") -> dict[str, Any]:
        return {
            "task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED", "eta": 0},
            "images": [{"image_url": image_url, "image_type": image_type, "image_url_ttl": "60"}],
            "extra": {"seed": "42"},
        }

    async def result(self, request: web.Request) -> web.StreamResponse:
        self._record(self.api, request)
        task_id = request.query["task_id"]
        image = f"{self.images.url}/img/{task_id}.png?X-Amz-Signature=s3cr3t"
        answers: dict[str, Any] = {
            "result_missing_task": {},
            "result_list": [],
            "result_unknown_status": {
                "task": {"task_id": task_id, "status": "TASK_STATUS_TELEPORTED"}
            },
            "result_succeeded_without_images": {
                "task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"},
                "images": [],
            },
            "image_file_scheme": self._success(task_id, "file:///etc/passwd"),
            "image_ftp_scheme": self._success(task_id, f"ftp://127.0.0.1/{task_id}.png"),
            "image_type_escape": self._success(task_id, image, "../../evil"),
        }
        if task_id == "result_redirect_elsewhere":
            raise web.HTTPTemporaryRedirect(f"{self.elsewhere.url}/steal")
        if task_id == "result_html":
            return web.Response(text=HTML, content_type="text/html")
        if task_id == "result_truncated":
            return web.Response(text='{"task": {"task_id": "res', content_type="application/json")
        return web.json_response(answers.get(task_id, self._success(task_id, image)))

    # --- images and elsewhere -------------------------------------------------------------------

    async def image(self, request: web.Request) -> web.Response:
        self._record(self.images, request)
        name = request.match_info["name"]
        if name == "image_redirect_to_file":
            raise web.HTTPFound("file:///etc/passwd")
        if name == "image_html":  # a CDN's error page served with 200
            return web.Response(text=HTML, content_type="text/html")
        if name == "image_redirect_elsewhere":
            raise web.HTTPFound(f"{self.elsewhere.url}/landed.png")
        return web.Response(body=png_bytes(), content_type="image/png")

    async def landed(self, request: web.Request) -> web.Response:
        self._record(self.elsewhere, request)
        return web.Response(body=png_bytes(200), content_type="image/png")

    def apps(self) -> list[tuple[Origin, web.Application]]:
        api = web.Application()
        api.router.add_put("/image", self.upload)
        api.router.add_post("/v3/async/instant-id", self.submit)
        api.router.add_get("/v3/async/task-result", self.result)
        images = web.Application()
        images.router.add_get("/img/{name}.png", self.image)
        elsewhere = web.Application()
        elsewhere.router.add_route("*", "/{tail:.*}", self.landed)
        return [(self.api, api), (self.images, images), (self.elsewhere, elsewhere)]


@contextlib.asynccontextmanager
async def misbehaving_service() -> AsyncIterator[Misbehaving]:
    service = Misbehaving()
    async with contextlib.AsyncExitStack() as stack:
        for origin, app in service.apps():
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            origin.url = f"http://127.0.0.1:{port}"
        yield service
