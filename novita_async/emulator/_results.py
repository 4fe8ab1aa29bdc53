"""A task's result as the service tells it: the task-result answer, and the webhook event that
carries the same answer when the task ends (``{"event_type": "ASYNC_TASK_RESULT", "payload"}``).
"""

from __future__ import annotations

import json
from typing import Any

from .. import _spec
from ._state import EmulatorState
from ._tasks import TaskRecord

__all__ = ["EVENT_TYPE", "announce_end", "announce_test", "result_body", "webhook_of"]

EVENT_TYPE = "ASYNC_TASK_RESULT"


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
    """The answer of ``GET /v3/async/task-result`` for the task, now."""
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
            "task_type": record.task_type,
            "status": record.status,
            "reason": record.reason,
            "eta": eta,
            "progress_percent": percent,
        },
        "images": _image_entries(state, record) if record.status == _spec.STATUS_SUCCEED else [],
        "videos": [],
        "audios": [],
    }


def webhook_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``extra.webhook`` object of a (validated) submission, if it asked for one."""
    webhook = (body.get("extra") or {}).get("webhook")
    return webhook if isinstance(webhook, dict) else None


def _send(state: EmulatorState, record: TaskRecord, url: str) -> None:
    event = {"event_type": EVENT_TYPE, "payload": result_body(state, record)}
    state.webhooks.send(record.task_id, url, json.dumps(event).encode())


def announce_end(state: EmulatorState, record: TaskRecord) -> None:
    """The task ended: send its webhook event, if its submission asked for one."""
    webhook = webhook_of(record.body)
    if webhook is not None:
        _send(state, record, webhook["url"])


def in_test_mode(body: dict[str, Any]) -> bool:
    """Whether a submission asks for a simulated webhook event instead of a task (it creates
    none, and costs nothing)."""
    test_mode = (webhook_of(body) or {}).get("test_mode") or {}
    return bool(test_mode.get("enabled"))


def announce_test(
    state: EmulatorState, key: str, body: dict[str, Any], task_type: str = "INSTANT_ID"
) -> str | None:
    """For a submission in webhook test mode: send the simulated event (its status is
    ``return_task_status``, default succeeded; no images) at once and return its task id;
    None for any other submission."""
    webhook = webhook_of(body)
    if webhook is None or not in_test_mode(body):
        return None
    status = webhook["test_mode"].get("return_task_status") or _spec.STATUS_SUCCEED
    record = state.tasks.simulated(key, body, status, task_type)
    _send(state, record, webhook["url"])
    return record.task_id
