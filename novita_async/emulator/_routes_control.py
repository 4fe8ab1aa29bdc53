"""``/__emulator/...`` on the API origin: counters and fault control over HTTP.

These let a benchmark or a script steer an emulator running as a separate process:

- ``GET /__emulator/stats``: the counters as JSON.
- ``POST /__emulator/reset-stats``: zero them.
- ``POST /__emulator/faults/{route}`` with ``{"spec": {FaultSpec fields}, "script": [...]}``
  (either key optional); ``DELETE /__emulator/faults`` clears every route.
- ``POST /__emulator/fail-next-tasks`` with ``{"count": n, "reason": "..."}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._faults import DEFAULT_TASK_FAILURE, FaultSpec
from ._responses import api_error
from ._state import STATE, EmulatorState

__all__ = ["add_control_routes", "stats_snapshot"]


def stats_snapshot(state: EmulatorState) -> dict[str, Any]:
    return state.stats.snapshot(state.tasks.counts()).to_dict()


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats_snapshot(request.app[STATE]))


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
    try:
        if "spec" in body:
            state.faults.set(route, FaultSpec(**body["spec"]))
        if "script" in body:
            state.faults.script(route, [str(token) for token in body["script"]])
    except (TypeError, ValueError) as problem:
        return api_error(400, "INVALID_REQUEST_BODY", str(problem))
    return web.json_response({"route": route, "pending": state.faults.pending(route)})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({})


async def fail_next_tasks(request: web.Request) -> web.Response:
    body = await _json_object(request)
    count = body.get("count", 1)
    if not isinstance(count, int) or count < 0:
        return api_error(400, "INVALID_REQUEST_BODY", "count: must be a non-negative integer")
    request.app[STATE].faults.fail_next_tasks(count, str(body.get("reason", DEFAULT_TASK_FAILURE)))
    return web.json_response({})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/__emulator/stats", get_stats, allow_head=False)
    app.router.add_post("/__emulator/reset-stats", reset_stats)
    app.router.add_post("/__emulator/faults/{route}", set_faults)
    app.router.add_delete("/__emulator/faults", clear_faults)
    app.router.add_post("/__emulator/fail-next-tasks", fail_next_tasks)
