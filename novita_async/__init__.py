"""novita-async: an asyncio-native client for Novita AI's InstantID API."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import batch, webhooks
from ._client import InstantIDOutcome, NovitaClient
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
    ControlNet,
    ControlNetUnit,
    Extra,
    InstantIDRequest,
    LoRA,
    Model,
    ModelPage,
    ResultImage,
    Task,
    TaskResult,
    TaskStatus,
    Webhook,
    WebhookTestMode,
)
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

__version__ = "0.2.0"

__all__ = [
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
    "EventKind",
    "ExitStatus",
    "Extra",
    "ImageURLExpiredError",
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
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Timeouts",
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
