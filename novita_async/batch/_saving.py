"""A task's images into OUT: downloaded with the client's one retry loop, then published.

Each image goes to ``OUT/<job id>_<n>.<ext>`` (one folder for every image: the job id names the
file), through :meth:`NovitaClient.download_images` (expired URLs renewed within its budget). For
an object-store OUT, ``publish`` then uploads the files from the staging folder; both happen
before the job is recorded succeeded, so a record never names an image that is not there.
Each image's size and SHA-256 are taken from the file written (before it leaves staging) for the
journal's record, which a rerun and ``status --verify`` check the outputs against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs

from .._atomic import local_io
from .._client import NovitaClient
from .._events import ClientEvent, EventKind
from .._exceptions import InvalidResponseError
from .._models import TaskResult
from .._retry import RetryPolicy
from ._events import BatchEventKind
from ._summary import SummaryCounter

__all__ = ["MIN_DOWNLOAD_ATTEMPTS", "ImageSaver", "SavedImages", "file_digest"]

# Attempts at least for each image download: an unattended run rides out a 429 or 5xx spell
# longer than an interactive caller would (the task is paid for; its image must not be lost).
MIN_DOWNLOAD_ATTEMPTS = 4


@attrs.frozen
class SavedImages:
    """A task's images as saved: their names in OUT, sizes in bytes and SHA-256 (hex)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    digests: tuple[str, ...]


def file_digest(path: Path) -> tuple[int, str]:
    """The size and SHA-256 (hex) of the file at ``path``; blocking."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        return handle.tell(), digest.hexdigest()


def _digests(paths: Sequence[Path]) -> list[tuple[int, str]]:
    measured = []
    for path in paths:
        with local_io("reading an image saved", path):
            measured.append(file_digest(path))
    return measured


class ImageSaver:
    def __init__(
        self,
        *,
        client: NovitaClient,
        out_dir: Path,
        retry: RetryPolicy,
        counter: SummaryCounter,
        on_request: Callable[[str], None],
        emit: Callable[..., None],
        publish: Callable[[Sequence[Path]], Awaitable[None]] | None,
    ) -> None:
        self._client = client
        self._out_dir = out_dir
        self._retry = attrs.evolve(retry, attempts=max(retry.attempts, MIN_DOWNLOAD_ATTEMPTS))
        self._counter = counter
        self._on_request = on_request
        self._emit = emit
        self._publish = publish

    async def save(self, job_id: str, task_id: str, result: TaskResult) -> SavedImages:
        """The task's images, every one of them in OUT."""
        self._counter.tasks += 1
        if not result.images:
            raise InvalidResponseError(f"task {task_id} succeeded without images")

        def observe(event: ClientEvent) -> None:
            if event.kind is EventKind.RETRY:
                message = f"image download retried in {event.delay or 0.0:.1f}s"
                if event.error == "IMAGE_URL_EXPIRED":
                    message = "image URL expired: fetching fresh ones"
                    self._on_request("result")  # the renewal's call
                    self._on_request("image")  # and the image's again
                fields: dict[str, Any] = {"task_id": task_id, "reason": event.error}
                self._emit(BatchEventKind.RETRIED, job_id, message=message, **fields)

        for _ in result.images:
            self._on_request("image")
        paths = await self._client.download_images(
            result, self._out_dir, stem=f"{job_id}_", retry=self._retry, on_event=observe
        )
        measured = await anyio.to_thread.run_sync(_digests, paths)
        if self._publish is not None:
            await self._publish(paths)
        self._counter.images += len(paths)
        return SavedImages(
            names=tuple(path.name for path in paths),
            sizes=tuple(size for size, _ in measured),
            digests=tuple(digest for _, digest in measured),
        )
