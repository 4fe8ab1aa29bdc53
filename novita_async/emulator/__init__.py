"""A local emulator of the Novita image API (InstantID and the v3 image tasks), with fault
injection.

Three origins, as in production: the API (``base_url``), the asset upload host (``assets_url``)
and the image host the signed result URLs point at (``images_origin``)::

    from novita_async.emulator import Emulator, EmulatorConfig, FaultSpec

    async with Emulator(EmulatorConfig(seed=1, task_base_seconds=0)) as emu:
        emu.faults.set("submit", FaultSpec(error_5xx=0.05, reset_after=0.01))
        emu.faults.script("result", ["503", "429", "ok"])
        ...  # point a client at emu.base_url / emu.assets_url with emu.api_key
        assert emu.stats().duplicate_submissions == 0

Faults (``emu.faults``; over HTTP under ``/__emulator/``; on the command line as options):

- per route, drawn (seeded) or scripted: 5xx in JSON or a gateway's HTML, 429 with
  ``Retry-After`` (seconds or an HTTP date), resets before or after the route ran, truncated
  bodies, expired URLs, latency, a bandwidth cap (``bandwidth=0.5``: one byte every two seconds);
  a spec with ``for_seconds`` lapses, e.g. ``set("submit", rate_429=1, retry_after=86400,
  for_seconds=10)``; ``hold``/``release`` park a route's requests;
- tasks: ``fail_next_tasks(n)``, and the ``[[fail]]`` / ``[[seconds:N]]`` prompt markers;
- the account: ``account_error(after=20)`` answers 400 ``BILLING_BALANCE_NOT_ENOUGH`` to every
  submission (InstantID's and the v3 tasks') once 20 more tasks are created (any status and
  reason, on any API route: ``account_error(status=403, reason="INVALID_API_KEY",
  routes=API_ROUTES)``); see also the balance, below;
- the network: ``outage(seconds=15, after=20)`` closes the API origin's listening socket and its
  connections (a client sees "connection refused") on the first request once 20 more tasks are
  created (or at once, without ``after``), and listens again on the same port 15 s later;
- memory: ``forget_tasks(ids)`` (their results answer 404 ``TASK_NOT_FOUND``) and
  ``forget_assets(ids)`` (a submission naming one answers 400); ``emu.task_ids()`` and
  ``emu.asset_ids()`` list them all. ``asset_ttl`` (``--asset-ttl SECONDS``) forgets each asset
  that long after its upload. A submission naming an asset the emulator does not know (forgotten,
  expired, or never uploaded here) answers 400 ``INVALID_REQUEST_BODY``: with
  ``asset_errors="named"`` (the default) its message names the id and its metadata the field;
  with ``asset_errors="plain"`` (``--asset-errors plain``) it is a generic message and no
  metadata, which is all the real service promises (it documents no asset lifetime and no error
  of its own for an unknown asset).

Webhooks: a task whose submission set ``extra.webhook.url`` (http or https) gets, when it ends
(succeeded or failed), ``POST <url>`` with ``{"event_type": "ASYNC_TASK_RESULT", "payload":
<the task-result answer>}``, JSON, unsigned and without ``Authorization``, from the emulator's
own event loop. An attempt fails on a non-2xx answer, no connection, or no answer within
``webhook_timeout`` seconds (5); it is retried up to 5 times after 1, 2, 4, 8 and 16 s, times
``webhook_backoff_scale`` (the service does not document its backoff; this is the emulator's).
``extra.webhook.test_mode = {"enabled": true, "return_task_status": "TASK_STATUS_FAILED"}``
(default ``..._SUCCEED``) sends a simulated event at once instead: no task is created (its id
answers 404) and the payload has no images. A task of 0 seconds may announce its end before its
submitter has read its task id; the service's tasks take seconds. Faults of the events
(``emu.faults.webhooks``; ``POST /__emulator/faults/webhook``; ``--webhook-fault``,
``--webhook-script``): ``set(drop=0.1, duplicate=0.1, out_of_order=0.1, delay=0.5,
jitter=0.2)``, drawn per event (seeded), or ``script(["drop", "duplicate", "out_of_order",
"delay:2", "ok"])`` for the next events, ``drop_next(n)``; out of order holds an event until
the next event sent has its first answer (at most ``hold_seconds``). A receiver answering 500 or
too slowly is retried. ``stats().webhooks`` counts events, attempts, deliveries, retries,
timeouts, failures and each fault; ``emu.webhook_counts()`` (``GET /__emulator/webhooks``) per
task. ``emu.task_ends()`` (``GET /__emulator/task-ends``) gives the moment each task ended as a
Unix time, to compare with moments taken in another process (``clock="emulator"``: on the
event loop's clock).

The v3 image tasks: ``POST /v3/async/txt2img``, ``img2img``, ``inpainting`` and ``upscale`` take
the wrapped body ``{"extra": {...}, "request": {...}}`` (a flat body answers 400), with every
documented field, range and enum checked; input images are bare base64 (a ``data:`` URI, bad
base64, an undecodable image, one over the endpoint's limit or a mask of another resolution answer
400 naming the field). They answer ``{"task_id"}`` (with ``legacy_task_answer``,
``--legacy-task-answer``: ``{"code": 0, "msg": "", "data": {"task_id"}}``) and end through the same
task-result route and webhooks, with ``task_type`` ``TXT_TO_IMG``, ``IMG_TO_IMG``, ``INPAINTING``,
``UPSCALE`` and images of width x height (txt2img, img2img), of the input's size (inpainting) or of
the input's size times ``scale_factor`` (upscale, one image). Their route names (``txt2img``...)
take faults like ``submit``; the rate limits apply per key and per endpoint:
``route_images_per_minute`` (``--route-limit txt2img=40``) limits a route's images per minute,
and ``DOCUMENTED_IMAGES_PER_MINUTE`` (``--route-limit documented``) holds the service's
documented defaults (txt2img and upscale 20, img2img and inpainting 10); off unless set.
``stats().submissions_by_route`` counts tasks per route, ``stats().unknown_fields`` the fields of
each route the emulator does not know; ``stats().duplicate_submissions`` counts a body sent again
(its inline images compared by a hash of their text, not kept). A task keeps a thumbnail of each
input (at most 512 pixels a side) for its pictures, never the input or its base64.

The account: ``GET /v3/user`` (route ``user``) answers ``{"credit_balance": ...}`` in 1/10,000
USD, starting at ``credit_balance`` ($100 by default). Each task created spends
``image_costs[route] * image_num`` (``IMAGE_COSTS`` by default: the emulator's own figures, not
the service's prices; ``--image-cost txt2img=15``); a submission the balance cannot pay, or any
once it is zero, answers 400 ``BILLING_BALANCE_NOT_ENOUGH`` with the account error's body.
Refusals and webhook test-mode submissions cost nothing. ``stats().credit_balance`` is the
balance now.

``faults.clear()`` undoes every fault. Run the emulator as a process with ``python -m
novita_async.emulator`` (see ``--help``), or from Python with :class:`EmulatorProcess`.
"""

from __future__ import annotations

from ._config import DOCUMENTED_IMAGES_PER_MINUTE, IMAGE_COSTS, EmulatorConfig, ImageMode
from ._fault_specs import (
    API_ROUTES,
    ROUTES,
    SUBMIT_ROUTES,
    V3_ROUTES,
    AccountError,
    FaultSpec,
    Outage,
    Outcome,
)
from ._faults import Faults
from ._process import EmulatorProcess, start_emulator_process
from ._server import Emulator
from ._stats import EmulatorStats
from ._webhook_faults import WebhookFaults, WebhookFaultSpec

__all__ = [
    "API_ROUTES",
    "DOCUMENTED_IMAGES_PER_MINUTE",
    "IMAGE_COSTS",
    "ROUTES",
    "SUBMIT_ROUTES",
    "V3_ROUTES",
    "AccountError",
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "EmulatorStats",
    "FaultSpec",
    "Faults",
    "ImageMode",
    "Outage",
    "Outcome",
    "WebhookFaultSpec",
    "WebhookFaults",
    "start_emulator_process",
]
