"""The API origin: submit, task result and model list, behind bearer-key authentication."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .. import _spec
from ._catalog import query_models
from ._responses import APIProblem, api_error
from ._state import STATE, EmulatorState
from ._tasks import TaskRecord
from ._validation import INVALID_REQUEST_BODY, validate_instant_id

__all__ = ["add_api_routes"]


def authenticate(state: EmulatorState, request: web.Request) -> str:
    """The caller's API key; 401 when there is none, 403 when keys are configured and it is
    not one of them, and the account error of the faults once it applies."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise APIProblem(
            401, "MISSING_API_KEY", "missing API key: send Authorization: Bearer <key>"
        )
    allowed = state.config.api_keys
    if allowed is not None and key not in allowed:
        raise APIProblem(403, "INVALID_API_KEY", "invalid API key")
    error = state.faults.account_refusal(request.match_info.route.name or "")
    if error is not None:
        state.stats.faults["account_error"] += 1
        raise APIProblem(error.status, error.reason, error.message)
    return key


async def submit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = authenticate(state, request)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        raise APIProblem(400, INVALID_REQUEST_BODY, "request body is not valid JSON") from None
    validate_instant_id(body, state.asset_known)
    wait = state.limiter.admit(key, body["image_num"])
    if wait is not None:
        state.stats.rate_limited += 1
        raise APIProblem(
            429,
            "RATE_LIMIT_EXCEEDED",
            "rate limit exceeded, please retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    record = state.tasks.create(key, body)
    state.stats.record_submission(body)
    state.faults.task_created()
    return web.json_response({"task_id": record.task_id})


def _image_entries(state: EmulatorState, record: TaskRecord) -> list[dict[str, Any]]:
    ttl = state.config.image_url_ttl
    entries = []
    for name in record.image_names:
        path = f"/prod/{record.task_id}/{name}"
        entries.append(
            {
                "image_url": f"{state.images_origin}{path}?{state.signer.sign(path, ttl)}",
                # The real service sends the TTL (and the seed) as strings.
                "image_url_ttl": str(ttl),
                "image_type": record.image_type,
                "nsfw_detection_result": None,
            }
        )
    return entries


def result_body(state: EmulatorState, record: TaskRecord) -> dict[str, Any]:
    percent, eta = state.tasks.progress(record)
    done = record.finished_wall_ms
    extra = record.body.get("extra") or {}
    return {
        "extra": {
            "seed": str(record.seed),
            "enable_nsfw_detection": bool(extra.get("enable_nsfw_detection", False)),
            "debug_info": {
                "request_info": "",
                "submit_time_ms": str(record.submitted_wall_ms),
                "execute_time_ms": "" if done is None else str(done - record.submitted_wall_ms),
                "complete_time_ms": "" if done is None else str(done),
            },
        },
        "task": {
            "task_id": record.task_id,
            "task_type": "INSTANT_ID",
            "status": record.status,
            "reason": record.reason,
            "eta": eta,
            "progress_percent": percent,
        },
        "images": _image_entries(state, record) if record.status == _spec.STATUS_SUCCEED else [],
        "videos": [],
    }


async def task_result(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = authenticate(state, request)
    task_id = request.query.get("task_id", "").strip()
    if not task_id:
        raise APIProblem(400, INVALID_REQUEST_BODY, "task_id: is required", {"field": "task_id"})
    record = state.tasks.get(task_id, owner=key)
    if record is not None and state.faults.forgets(task_id):
        state.stats.faults["forgotten_task"] += 1
        record = None
    if record is None:
        raise APIProblem(404, "TASK_NOT_FOUND", f"task {task_id} not found")
    return web.json_response(result_body(state, record))


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    authenticate(state, request)
    return web.json_response(query_models(request.query))


async def not_found(request: web.Request) -> web.Response:
    return api_error(404, "API_NOT_FOUND", f"no API at {request.method} {request.path}")


def add_api_routes(app: web.Application) -> None:
    app.router.add_post("/v3/async/instant-id", submit, name="submit")
    app.router.add_get("/v3/async/task-result", task_result, name="result", allow_head=False)
    app.router.add_get("/v3/model", models, name="models", allow_head=False)
