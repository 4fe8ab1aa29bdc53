"""The layer around every emulated route: counting, held requests, and injected faults."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler

from ._fault_specs import API_ROUTES, ROUTES, V3_ROUTES, Decision, Outcome
from ._responses import APIProblem, api_error, gateway_html, s3_error
from ._shaping import BodySource, StreamedAnswer, reset_connection, write_body
from ._state import STATE, EmulatorState

__all__ = ["emulated_route"]

_FAILED_REASONS = {
    "submit": "CREATE_TASK_FAILED",
    "result": "GET_RESULT_FAILED",
    **dict.fromkeys(V3_ROUTES, "CREATE_TASK_FAILED"),
}


def _retry_after(decision: Decision) -> str:
    if decision.http_date:
        moment = datetime.now(UTC) + timedelta(seconds=decision.retry_after)
        return format_datetime(moment, usegmt=True)
    return str(math.ceil(decision.retry_after))


def injected_answer(route: str, decision: Decision) -> web.Response:
    """The answer of an outcome that replaces the route's own."""
    outcome, status = decision.outcome, decision.status
    if outcome is Outcome.HTML_5XX:
        return gateway_html(status)
    if outcome is Outcome.EXPIRE:
        return s3_error(403, "AccessDenied", "Request has expired")
    if outcome is Outcome.RATE_429:
        headers = {"Retry-After": _retry_after(decision)}
        return api_error(429, "RATE_LIMIT_EXCEEDED", "too many requests", headers=headers)
    if route == "image":
        code = "SlowDown" if status == 503 else "InternalError"
        return s3_error(status, code, "We encountered an internal error. Please try again.")
    reason = "SERVICE_UNAVAILABLE" if status == 503 else _FAILED_REASONS.get(route, "INTERNAL")
    return api_error(status, reason, "injected server error")


def _dropped() -> web.Response:
    # What the handler hands back to aiohttp after a reset: aiohttp's write to the closed
    # transport fails with a ConnectionError, which it treats as a client that went away.
    response = web.Response()
    response.force_close()
    return response


@web.middleware
async def emulated_route(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name
    if route not in ROUTES:
        return await handler(request)
    state = request.app[STATE]
    if route in API_ROUTES and state.faults.outage_blocks():
        state.stats.faults["outage_reset"] += 1
        state.stats.record_request(route, "reset")
        reset_connection(request)
        return _dropped()
    state.stats.enter(route)
    try:
        await state.faults.wait_gate(route)
        return await _answer(state, route, request, handler)
    finally:
        state.stats.leave(route)


async def _answer(
    state: EmulatorState, route: str, request: web.Request, handler: Handler
) -> web.StreamResponse:
    stats = state.stats
    decision = state.faults.decide(route)
    if decision.delay:
        await anyio.sleep(decision.delay)
    outcome = decision.outcome
    if outcome is not Outcome.OK:
        stats.faults[outcome.value] += 1
    if outcome is Outcome.RESET_BEFORE:
        reset_connection(request)
        stats.record_request(route, "reset")
        return _dropped()

    if outcome in (Outcome.ERROR_5XX, Outcome.HTML_5XX, Outcome.RATE_429, Outcome.EXPIRE):
        answer: web.StreamResponse = injected_answer(route, decision)
    else:
        try:
            answer = await handler(request)
        except APIProblem as problem:
            answer = problem.response()

    if outcome is Outcome.RESET_AFTER:
        reset_connection(request)
        stats.record_request(route, "reset")
        return _dropped()

    truncate = outcome is Outcome.TRUNCATE
    source = answer.source if isinstance(answer, StreamedAnswer) else None
    if source is None and (truncate or decision.bandwidth) and isinstance(answer, web.Response):
        body = answer.body
        source = BodySource(body if isinstance(body, bytes) else b"")
    if source is None:
        stats.record_request(route, answer.status)
        return answer
    try:
        response, written = await write_body(
            request, answer, source, truncate=truncate, bandwidth=decision.bandwidth
        )
    except ConnectionError:
        # The client went away mid-body (a cancelled download): not an emulator error.
        stats.record_request(route, "client_closed")
        return _dropped()
    stats.record_request(route, "truncated" if truncate else answer.status)
    if route == "image" and answer.status == 200:
        stats.image_bytes += written
    return response
