"""``/__emulator/...`` on the API origin: counters and fault control over HTTP.

These let a benchmark or a script steer an emulator running as a separate process:

- ``GET /__emulator/stats``: the counters as JSON.
- ``POST /__emulator/reset-stats``: zero them.
- ``POST /__emulator/faults/{route}`` with ``{"spec": {FaultSpec fields}, "script": [...]}``
  (either key optional); ``DELETE /__emulator/faults`` clears every fault (``Faults.clear()``).
  ``POST /__emulator/faults/webhook`` takes the same keys for webhook events: WebhookFaultSpec's
  fields and their scripted outcomes (``drop``, ``duplicate``, ``out_of_order``, ``delay:N``).
- ``POST /__emulator/fail-next-tasks`` with ``{"count": n, "reason": "..."}``.
- ``POST /__emulator/account-error`` with AccountError's fields, e.g. ``{"after": 20}``.
- ``POST /__emulator/credit-balance`` with ``{"units": n}``: the account's balance now.
- ``POST /__emulator/outage`` with Outage's fields, e.g. ``{"seconds": 15, "after": 20}``. These
  routes are on the API origin: during the outage they are unreachable too.
- ``POST /__emulator/forget`` with ``{"tasks": [ids] or "all", "assets": [ids] or "all"}``.
- ``GET /__emulator/task-ends``: ``{task_id: Unix time}`` of every ended task (``?clock=emulator``:
  on the emulator's event-loop clock instead).
- ``GET /__emulator/webhooks``: webhook deliveries per task, ``{task_id: {"attempted",
  "delivered", "retries", "dropped", "failed"}}``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web

from ._fault_specs import DEFAULT_TASK_FAILURE, AccountError, FaultSpec, Outage
from ._responses import api_error
from ._state import STATE
from ._webhook_faults import WebhookFaultSpec

__all__ = ["add_control_routes"]


_T = TypeVar("_T")


def _bad(problem: Exception | str) -> web.Response:
    return api_error(400, "INVALID_REQUEST_BODY", str(problem))


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].snapshot().to_dict())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats.reset()
    return web.json_response({})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_object(request)
    route = request.match_info["route"]
    if route == "webhook":
        return _set_webhook_faults(request, body)
    try:
        if "spec" in body:
            state.faults.set(route, FaultSpec(**body["spec"]))
        if "script" in body:
            state.faults.script(route, [str(token) for token in body["script"]])
    except (TypeError, ValueError) as problem:
        return _bad(problem)
    return web.json_response({"route": route, "pending": state.faults.pending(route)})


def _set_webhook_faults(request: web.Request, body: dict[str, Any]) -> web.Response:
    faults = request.app[STATE].faults.webhooks
    try:
        if "spec" in body:
            faults.set(WebhookFaultSpec(**body["spec"]))
        if "script" in body:
            faults.script([str(token) for token in body["script"]])
    except (TypeError, ValueError) as problem:
        return _bad(problem)
    return web.json_response({"route": "webhook", "pending": faults.pending()})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({})


async def fail_next_tasks(request: web.Request) -> web.Response:
    body = await _json_object(request)
    count = body.get("count", 1)
    if not isinstance(count, int) or count < 0:
        return _bad("count: must be a non-negative integer")
    request.app[STATE].faults.fail_next_tasks(count, str(body.get("reason", DEFAULT_TASK_FAILURE)))
    return web.json_response({})


async def _body_as(request: web.Request, cls: type[_T]) -> _T:
    """The JSON object of the request as ``cls``'s fields; a 400 when they do not fit."""
    body = await _json_object(request)
    try:
        return cls(**body)
    except (TypeError, ValueError) as problem:
        error = {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": str(problem)}
        text = json.dumps({**error, "metadata": {}})
        raise web.HTTPBadRequest(text=text, content_type="application/json") from None


async def account_error(request: web.Request) -> web.Response:
    error = await _body_as(request, AccountError)
    request.app[STATE].faults.account_error(error)
    return web.json_response({})


async def credit_balance(request: web.Request) -> web.Response:
    body = await _json_object(request)
    try:
        request.app[STATE].set_credit_balance(body.get("units"))  # type: ignore[arg-type]
    except ValueError as problem:
        return _bad(problem)
    return web.json_response({"credit_balance": request.app[STATE].credit_balance})


async def outage(request: web.Request) -> web.Response:
    planned = await _body_as(request, Outage)
    # Answered before the outage can begin: it closes this connection too.
    answer = web.json_response({})
    await answer.prepare(request)
    await answer.write_eof()
    request.app[STATE].faults.outage(planned)
    return answer


def _ids(value: object, every: list[str], name: str) -> list[str]:
    if value == "all":
        return every
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f'{name}: expected a list of ids or "all"')
    return value


async def forget(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_object(request)
    try:
        tasks = _ids(body.get("tasks", []), state.tasks.ids(), "tasks")
        assets = _ids(body.get("assets", []), list(state.assets), "assets")
    except ValueError as problem:
        return _bad(problem)
    state.faults.forget_tasks(tasks)
    state.faults.forget_assets(assets)
    return web.json_response({"tasks": len(tasks), "assets": len(assets)})


async def task_ends(request: web.Request) -> web.Response:
    clock = request.query.get("clock", "unix")
    if clock not in ("unix", "emulator"):
        return _bad("clock: must be unix or emulator")
    return web.json_response(request.app[STATE].tasks.ends(unix=clock == "unix"))


async def webhooks(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.webhooks_of_tasks())


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/__emulator/stats", get_stats, allow_head=False)
    app.router.add_post("/__emulator/reset-stats", reset_stats)
    app.router.add_post("/__emulator/faults/{route}", set_faults)
    app.router.add_delete("/__emulator/faults", clear_faults)
    app.router.add_post("/__emulator/fail-next-tasks", fail_next_tasks)
    app.router.add_post("/__emulator/account-error", account_error)
    app.router.add_post("/__emulator/credit-balance", credit_balance)
    app.router.add_post("/__emulator/outage", outage)
    app.router.add_post("/__emulator/forget", forget)
    app.router.add_get("/__emulator/task-ends", task_ends, allow_head=False)
    app.router.add_get("/__emulator/webhooks", webhooks, allow_head=False)
