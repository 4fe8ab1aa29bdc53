"""The API origin: submit, task result, model list and user, behind bearer-key authentication.

A submission in webhook test mode (``extra.webhook.test_mode.enabled``) creates no task: its
simulated event is sent at once, and its task id is unknown to the task-result route. Any other
valid submission is paid from the account's balance as its task is created (``image_costs``);
one the balance cannot pay is refused as the service does, 400 ``BILLING_BALANCE_NOT_ENOUGH``.
A v3 body over ``THREAD_BODY_BYTES`` is parsed and checked in a worker thread (decoding 30 MB of
base64 takes the better part of a second), and only its inputs' thumbnails outlive the request.
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio.to_thread
from aiohttp import web

from ._catalog import query_models
from ._fault_specs import ACCOUNT_MESSAGES
from ._images import InputPicture, input_picture
from ._responses import APIProblem, api_error
from ._results import announce_test, in_test_mode, result_body
from ._state import STATE, EmulatorState
from ._v3_validation import TASK_ROUTES, TASK_TYPES, V3Submission, validate_v3
from ._validation import INVALID_REQUEST_BODY, validate_instant_id

__all__ = ["THREAD_BODY_BYTES", "add_api_routes"]

THREAD_BODY_BYTES = 1024 * 1024
_NOT_ENOUGH = "BILLING_BALANCE_NOT_ENOUGH"


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


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise APIProblem(400, INVALID_REQUEST_BODY, "request body is not valid JSON") from None


async def _json_body(request: web.Request) -> Any:
    return _loads(await request.read())


def _cost(state: EmulatorState, route: str, body: dict[str, Any]) -> int:
    """What the task of ``body`` will cost; a 400 when the balance cannot pay for it. Checked
    before the rate limit, paid when the task is created: nothing is paid for a refusal."""
    if in_test_mode(body):
        return 0
    cost = state.cost(route, body["image_num"])
    if cost is None:
        state.stats.faults["balance_not_enough"] += 1
        raise APIProblem(400, _NOT_ENOUGH, ACCOUNT_MESSAGES[_NOT_ENOUGH])
    return cost


def _admit(state: EmulatorState, key: str, route: str, images: int) -> None:
    wait = state.limiter.admit(key, images, route)
    if wait is not None:
        state.stats.rate_limited += 1
        raise APIProblem(
            429,
            "RATE_LIMIT_EXCEEDED",
            "rate limit exceeded, please retry later",
            headers={"Retry-After": str(math.ceil(wait))},
        )


async def submit(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = authenticate(state, request)
    body = await _json_body(request)
    validate_instant_id(body, state.asset_known, named_assets=state.config.asset_errors == "named")
    cost = _cost(state, "submit", body)
    _admit(state, key, "submit", body["image_num"])
    simulated = announce_test(state, key, body)
    if simulated is not None:
        return web.json_response({"task_id": simulated})
    record = state.tasks.create(key, body)
    state.credit_balance -= cost
    state.stats.record_submission(body)
    state.faults.task_created()
    return web.json_response({"task_id": record.task_id})


def _checked_v3(
    route: str, raw: bytes, pictures: bool
) -> tuple[V3Submission, tuple[InputPicture, ...]]:
    """The valid submission of ``raw``, and (``pictures``) what its task keeps of its inputs."""
    submission = validate_v3(route, _loads(raw))
    kept = tuple(input_picture(data) for data in submission.inputs) if pictures else ()
    return submission, kept


async def submit_v3(request: web.Request) -> web.Response:
    """A wrapped v3 image task; its route name is the path's last part (``txt2img``...)."""
    state = request.app[STATE]
    key = authenticate(state, request)
    route = request.match_info.route.name or ""
    raw = await request.read()
    pictures = state.config.image_mode == "full"  # tiny pictures never show the inputs
    if len(raw) > THREAD_BODY_BYTES:
        submission, kept = await anyio.to_thread.run_sync(
            _checked_v3, route, raw, pictures, limiter=state.images.cpu
        )
    else:
        submission, kept = _checked_v3(route, raw, pictures)
    del raw
    body = submission.body
    cost = _cost(state, route, body)
    # Each endpoint has its own window per key, as the service's per-endpoint limits.
    _admit(state, key, route, body["image_num"])
    task_type = TASK_TYPES[route]
    simulated = announce_test(state, key, body, task_type)
    if simulated is None:
        record = state.tasks.create(key, body, task_type=task_type, inputs=kept)
        state.credit_balance -= cost
        state.stats.record_submission(submission.same_as, route, submission.unknown)
        state.faults.task_created()
        task_id = record.task_id
    else:
        task_id = simulated
    if state.config.legacy_task_answer:
        return web.json_response({"code": 0, "msg": "", "data": {"task_id": task_id}})
    return web.json_response({"task_id": task_id})


async def user(request: web.Request) -> web.Response:
    state = request.app[STATE]
    authenticate(state, request)
    return web.json_response({"credit_balance": state.credit_balance})


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
    return web.json_response(
        query_models(request.query, drifted_flags=state.config.drifted_model_flags)
    )


async def not_found(request: web.Request) -> web.Response:
    return api_error(404, "API_NOT_FOUND", f"no API at {request.method} {request.path}")


def add_api_routes(app: web.Application) -> None:
    app.router.add_post("/v3/async/instant-id", submit, name="submit")
    app.router.add_get("/v3/async/task-result", task_result, name="result", allow_head=False)
    app.router.add_get("/v3/model", models, name="models", allow_head=False)
    for route in TASK_ROUTES:
        app.router.add_post(f"/v3/async/{route}", submit_v3, name=route)
    app.router.add_get("/v3/user", user, name="user", allow_head=False)
