"""novita-async: an asyncio-native client for Novita AI's image API: InstantID, and the v3 async
image tasks txt2img, img2img, inpainting and upscale.

Where to find what (one concept per module; docs/DESIGN.md says more):
  the API's contract (ranges, enums, limits) ........ _spec.py
  requests, results, models, webhook events ......... _models.py (parsed by _converter.py)
    InstantIDRequest; the v3 tasks' Txt2ImgRequest,
    Img2ImgRequest, InpaintingRequest, UpscaleRequest
    (ImageTaskRequest: endpoint, input slots, body);
    TASKS by a job line's "task" ..................... _models.py
  errors (the tree in the docstring) ................ _exceptions.py
  what a failure means, waits, exit statuses ........ _failures.py
  the key, hosts, timeouts, redaction ............... _config.py
  one HTTP call: attempts, sessions, bodies, downloads _http.py
  files: atomic writes, appends, locks, digests ..... _files.py
  the client (NovitaClient) ......................... _client.py
    submit(request, images=), instant_id(), txt2img(),
    img2img(), inpainting(), upscale(), balance();
    inputs checked against the endpoint's limits ..... _client.py (limits in _spec.py)
  when a task ends (polls and webhook events) ....... _completion.py
  receiving webhooks ................................ webhooks.py
  batch runs:
    the job file and jobs ........................... batch/_jobs.py
    inputs (read, hashed, uploaded or inlined once) . batch/_inputs.py
    options, shards ................................. batch/_options.py
    pacing (rate, 429s, outages, the stop) .......... batch/_pacing.py
    the journal (records, repair, store mirror) ..... batch/_journal.py
    the run folder (lock, results, status, verify) .. batch/_run_folder.py
    outputs (a folder or an object store) ........... batch/_outputs.py
    what a run would do (plan, dry run) ............. batch/_plan.py
    events and the summary .......................... batch/_events.py
    one job's way ................................... batch/_flow.py
    the runner ...................................... batch/_runner.py
  Ray shards (the same runner in K actors) .......... ray.py
  the command line .................................. _cli/
  the emulator, the testing kit ..................... emulator/, testing.py
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import batch, webhooks
from ._client import ImageInput, InstantIDOutcome, NovitaClient, TaskOutcome
from ._completion import PollPolicy
from ._config import ClientConfig, Timeouts
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetReachedError,
    ConfigurationError,
    ImageURLExpiredError,
    InvalidResponseError,
    LocalIOError,
    NotFoundError,
    NovitaError,
    OutageError,
    PermissionDeniedError,
    RateLimitError,
    RetriesExhaustedError,
    RunStoppedError,
    ServerError,
    StorageError,
    SubmitOutcomeUnknownError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
)
from ._failures import ExitStatus, RetryPolicy
from ._http import ClientEvent, EventKind
from ._models import (
    TASK_NAMES,
    TASKS,
    ControlNet,
    ControlNetUnit,
    Embedding,
    Extra,
    HiresFix,
    ImageControlNet,
    ImageControlNetUnit,
    ImageTaskRequest,
    Img2ImgRequest,
    InpaintingRequest,
    InputSlot,
    InstantIDRequest,
    IPAdapter,
    LoRA,
    Model,
    ModelPage,
    Refiner,
    ResultImage,
    Task,
    TaskRequest,
    TaskResult,
    TaskStatus,
    Txt2ImgRequest,
    UpscaleRequest,
    Webhook,
    WebhookTestMode,
)
from ._spec import InputLimits
from .batch import (
    BatchEvent,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    BatchSummary,
    Job,
    JobError,
    JobOutcome,
)
from .webhooks import WebhookEvent, WebhookReceiver

__version__ = "0.3.0"

__all__ = [
    "TASKS",
    "TASK_NAMES",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchEvent",
    "BatchEventKind",
    "BatchOptions",
    "BatchRunner",
    "BatchSummary",
    "BudgetReachedError",
    "ClientConfig",
    "ClientEvent",
    "ConfigurationError",
    "ControlNet",
    "ControlNetUnit",
    "Embedding",
    "EventKind",
    "ExitStatus",
    "Extra",
    "HiresFix",
    "IPAdapter",
    "ImageControlNet",
    "ImageControlNetUnit",
    "ImageInput",
    "ImageTaskRequest",
    "ImageURLExpiredError",
    "Img2ImgRequest",
    "InpaintingRequest",
    "InputLimits",
    "InputSlot",
    "InstantIDOutcome",
    "InstantIDRequest",
    "InvalidResponseError",
    "Job",
    "JobError",
    "JobOutcome",
    "LoRA",
    "LocalIOError",
    "Model",
    "ModelPage",
    "NotFoundError",
    "NovitaClient",
    "NovitaError",
    "OutageError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "Refiner",
    "ResultImage",
    "RetriesExhaustedError",
    "RetryPolicy",
    "RunStoppedError",
    "ServerError",
    "StorageError",
    "SubmitOutcomeUnknownError",
    "Task",
    "TaskError",
    "TaskFailedError",
    "TaskOutcome",
    "TaskRequest",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Timeouts",
    "Txt2ImgRequest",
    "UpscaleRequest",
    "ValidationError",
    "Webhook",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookTestMode",
    "__version__",
]


def _belong_to(module: str, names: Iterable[str], namespace: Mapping[str, Any]) -> None:
    """Label the classes and functions of ``names`` as ``module``'s: tracebacks read
    ``novita_async.RateLimitError`` (as httpx's do) and pickle finds them there. An attrs class's
    string annotations are resolved first, while ``__module__`` still names the defining module."""
    for name in names:
        public = namespace[name]
        if attrs.has(public):
            attrs.resolve_types(public)
        if isinstance(public, type) or inspect.isfunction(public):
            public.__module__ = module


# Each name by its public module; the batch and webhook names re-exported here, novita_async.
_belong_to(batch.__name__, batch.__all__, vars(batch))
_belong_to(webhooks.__name__, webhooks.__all__, vars(webhooks))
_belong_to(__name__, __all__, globals())
del _belong_to
