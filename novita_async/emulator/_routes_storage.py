"""The two storage origins: asset uploads (``PUT /image``) and presigned image downloads."""

from __future__ import annotations

import base64
import hashlib
import string
from datetime import UTC, datetime

from aiohttp import web

from .. import _spec
from ._images import RenderSpec, content_type_of
from ._responses import APIProblem, s3_error
from ._shaping import BodySource, StreamedAnswer
from ._signing import Verdict
from ._state import STATE, EmulatorState

__all__ = ["add_asset_routes", "add_image_routes"]

_ALPHABET = string.ascii_letters + string.digits


def sniff_image(data: bytes) -> str | None:
    """The image type of ``data`` from its magic bytes, or None (nothing is decoded here)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _new_asset_id(state: EmulatorState) -> str:
    # Shaped like the real ids: base64 of an object key in the asset bucket.
    token = "".join(state.asset_rng.choice(_ALPHABET) for _ in range(32))
    return base64.b64encode(f"r2/novita-ai-asset/image/{token}".encode()).decode()


async def upload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if "Authorization" in request.headers and not state.config.allow_auth_on_assets:
        state.stats.unexpected_auth += 1
        return s3_error(
            400, "InvalidArgument", "Unsupported Authorization Type", ArgumentName="Authorization"
        )
    limit = state.config.max_asset_bytes
    if (request.content_length or 0) > limit:
        raise APIProblem(400, "IMAGE_FILE_EXCEEDS_MAX_SIZE", f"the image exceeds {limit} bytes")
    data = await request.read()
    if not data:
        raise APIProblem(400, "INVALID_IMAGE_FORMAT", "the request body is empty")
    if len(data) > limit:
        raise APIProblem(400, "IMAGE_FILE_EXCEEDS_MAX_SIZE", f"the image exceeds {limit} bytes")
    if sniff_image(data) is None:
        raise APIProblem(400, "INVALID_IMAGE_FORMAT", "the body is not a png, jpeg or webp image")
    asset_id = _new_asset_id(state)
    state.add_asset(asset_id, data)
    state.stats.uploads += 1
    return web.json_response({"assets_id": asset_id})


def _expired(expiry: str) -> web.Response:
    return s3_error(
        403,
        "AccessDenied",
        "Request has expired",
        Expires=expiry,
        ServerTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


async def download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if "Authorization" in request.headers:
        # S3 refuses a presigned URL that also carries a header credential (value not echoed).
        state.stats.unexpected_auth += 1
        return s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
        )
    verdict, expiry = state.signer.check(request.path, request.query)
    if verdict is Verdict.BAD_SIGNATURE:
        return s3_error(
            403,
            "AccessDenied",
            "The request signature we calculated does not match the signature you provided.",
        )
    if verdict is Verdict.EXPIRED:
        return _expired("" if expiry is None else expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
    task_id, name = request.match_info["task_id"], request.match_info["name"]
    record = state.tasks.get(task_id)
    if record is None or record.status != _spec.STATUS_SUCCEED or name not in record.image_names:
        return s3_error(404, "NoSuchKey", "The specified key does not exist.")
    body = record.body
    labels = ("FACE", "REF")
    digests = None
    if record.task_type == "INSTANT_ID":
        faces = [state.assets[asset] for asset in body["face_image_assets_ids"]]
        refs = [state.assets[asset] for asset in body["ref_image_assets_ids"]]
    else:  # a v3 task: its input image and mask (none for txt2img)
        first, last = (record.inputs[0], record.inputs[-1]) if record.inputs else (None, None)
        faces = [b"" if first is None else first.thumbnail]
        refs = [b"" if last is None else last.thumbnail]
        if first is not None and last is not None:
            digests = (first.digest, last.digest)
        labels = ("IMAGE", "MASK") if len(record.inputs) > 1 else ("INPUT", "INPUT")
    spec = RenderSpec.build(
        labels=labels,
        faces=faces,
        refs=refs,
        digests=digests,
        image_type=record.image_type,
        width=body["width"],
        height=body["height"],
        seed=record.seed,
        index=record.image_names.index(name),
        image_num=body["image_num"],
        prompt=body["prompt"],
        model_name=body["model_name"],
    )
    data = await state.images.get(spec)
    state.stats.image_downloads += 1
    length = max(len(data), state.config.image_size_bytes or 0)
    headers = {
        "Content-Type": content_type_of(record.image_type),
        "ETag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
    }
    return StreamedAnswer(BodySource(data, length), headers=headers)


def add_asset_routes(app: web.Application) -> None:
    app.router.add_put("/image", upload, name="upload")


def add_image_routes(app: web.Application) -> None:
    app.router.add_get("/prod/{task_id}/{name}", download, name="image", allow_head=False)
