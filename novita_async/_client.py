"""The client, :class:`NovitaClient`: one obvious entry point to the whole InstantID API."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp
import anyio
import attrs

from . import _spec
from ._completion import PollPolicy, ProgressHook, wait_until_done
from ._config import ClientConfig, Timeouts
from ._converter import structure, unstructure_request
from ._exceptions import InvalidResponseError, ValidationError
from ._failures import RetryPolicy
from ._files import UploadSource, read_source, sniff_content_type
from ._http import Downloaded, EventHook, Renewal, Transport, image_extension
from ._models import InstantIDRequest, Model, ModelPage, ResultImage, TaskResult

if TYPE_CHECKING:
    from .webhooks import WebhookReceiver

__all__ = ["InstantIDOutcome", "NovitaClient", "map_limited"]

T = TypeVar("T")
R = TypeVar("R")

# Each request type's endpoint, as in ``POST /v3/async/<endpoint>``.
_ENDPOINTS: dict[type[Any], str] = {InstantIDRequest: "instant-id"}


@attrs.frozen
class InstantIDOutcome:
    """What :meth:`NovitaClient.instant_id` produced."""

    task_id: str
    result: TaskResult
    files: tuple[Path, ...]


class NovitaClient:
    """An asyncio client for Novita AI's InstantID API.

    Use it as ``async with NovitaClient() as client:`` (or call :meth:`aclose`). One client holds
    one connection pool and is safe to share among any number of concurrent tasks. Every option
    after ``api_key`` is keyword-only.

    ``session=`` is the seam for tests and for applications that own their HTTP stack: an
    :class:`aiohttp.ClientSession` of the caller's (a ``TCPConnector`` pointed at a test server,
    ``aiohttp.test_utils``, a proxy...) carries the requests as it is and is never closed by the
    client. Asset and image requests carry no credentials: if the session adds its own
    (``auth=`` or an ``Authorization`` header), those go on a bare session the client opens.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        assets_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        send_auth_to_assets: bool = False,
        on_event: EventHook | None = None,
    ) -> None:
        self._config = ClientConfig.resolve(
            api_key,
            base_url=base_url,
            assets_url=assets_url,
            timeouts=timeouts,
            max_connections=max_connections,
            retry=retry,
            send_auth_to_assets=send_auth_to_assets,
        )
        self._transport = Transport(self._config, session, on_event)
        self._result_url = self._config.api_url("/v3/async/task-result")

    def __repr__(self) -> str:
        state = "closed" if self._transport.closed else "open"
        return f"<NovitaClient base_url={str(self._config.base_url)!r} {state}>"

    @property
    def config(self) -> ClientConfig:
        return self._config

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the sessions this client opened (never a session the caller passed in)."""
        await self._transport.aclose()

    async def upload_asset(self, source: UploadSource, *, content_type: str | None = None) -> str:
        """Upload one image (a path, bytes, or anything with ``async read()``); return its id."""
        data, described = await read_source(source)
        if not data:
            raise ValidationError("source", described, "must not be empty")
        content_type = content_type or sniff_content_type(data)
        if content_type is None:
            raise ValidationError(
                "source", described, "must be a PNG, JPEG or WebP image (or pass content_type=)"
            )
        answer = await self._transport.call_json(
            "PUT",
            "upload",
            self._config.assets_url,
            auth=self._config.send_auth_to_assets,
            data=data,
            headers={"Content-Type": content_type},
        )
        asset_id = answer.get("assets_id") if isinstance(answer, dict) else None
        if not isinstance(asset_id, str) or not asset_id:
            raise InvalidResponseError("the upload answer has no assets_id")
        return asset_id

    async def upload_assets(
        self, sources: Sequence[UploadSource], *, concurrency: int = 8
    ) -> list[str]:
        """Upload many images, ``concurrency`` at a time; ids in the order of ``sources``."""
        return await map_limited(self.upload_asset, list(sources), concurrency)

    async def submit(self, request: InstantIDRequest, *, retry: RetryPolicy | None = None) -> str:
        """Submit a task and return its id (the endpoint follows from the request's type).

        An answer lost after the request was sent raises :class:`SubmitOutcomeUnknownError`
        rather than resubmitting (which could bill twice), unless the client's
        ``RetryPolicy(retry_unknown_submits=True)``. ``retry`` overrides the client's policy for
        this call (the batch runner's hands 429 back at once, to pause every submitter together).
        """
        request.check_submittable()
        return await self._submit_body(
            _ENDPOINTS[type(request)], unstructure_request(request), retry=retry
        )

    submit_instant_id = submit
    """:meth:`submit` for an :class:`InstantIDRequest` (the name of 0.1.0)."""

    async def _submit_body(
        self, endpoint: str, body: Mapping[str, Any], *, retry: RetryPolicy | None = None
    ) -> str:
        """:meth:`submit` of a ``body`` as it is, unchecked: the batch runner's seam (it sends the
        body it already made to fingerprint a job)."""
        answer = await self._transport.call_json(
            "POST",
            "submit",
            self._config.api_url(f"/v3/async/{endpoint}"),
            auth=True,
            json_body=body,
            creates_task=True,
            retry=retry,
        )
        task_id = answer.get("task_id") if isinstance(answer, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise InvalidResponseError("the submit answer has no task_id")
        return task_id

    async def get_task_result(
        self, task_id: str, *, retry: RetryPolicy | None = None, on_event: EventHook | None = None
    ) -> TaskResult:
        """The task's current state (and its images once it succeeded). ``retry`` applies to this
        call only; ``on_event`` hears its retries and its failure (the client's hook, every event).
        """
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id", task_id, "must be a non-empty string")
        answer = await self._transport.call_json(
            "GET",
            "result",
            self._result_url,
            auth=True,
            params={"task_id": task_id},
            retry=retry,
            on_event=on_event,
        )
        result: TaskResult = structure(answer, TaskResult)
        return result

    async def wait_for_task(
        self,
        task_id: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
        events: WebhookReceiver | None = None,
        event_grace: float | None = None,
    ) -> TaskResult:
        """Poll until the task succeeds (returned), fails (:class:`TaskFailedError`) or
        ``timeout`` seconds pass (:class:`TaskTimeoutError`).

        Delays follow the answers' ``eta`` and ``progress_percent`` (:class:`PollPolicy`).
        Connection errors, 429 and 5xx answers that outlast a call's own retries do not end the
        wait; they are raised (as the timeout's cause) only if the deadline passes. ``on_progress``
        is called (or awaited) with every answer.

        With ``events`` (a :class:`~novita_async.webhooks.WebhookReceiver` the request named in
        ``extra.webhook.url``), the task's event races the polling: the first to learn the end
        ends the wait (a failure by event raises :class:`TaskFailedError` too), and ``events``
        forgets the task. The first poll comes ``event_grace`` seconds in (None: at once), so an
        event in time costs no poll, and a lost one only the polls the policy makes.
        """
        if event_grace is not None and event_grace not in _spec.Range(0, None):
            raise ValidationError("event_grace", event_grace, "must be a number >= 0")
        return await wait_until_done(
            self.get_task_result,
            task_id,
            timeout=timeout,
            policy=poll or PollPolicy(),
            on_progress=on_progress,
            events=events,
            first_poll=(event_grace or 0.0) if events is not None else 0.0,
        )

    async def download_image(
        self,
        image: ResultImage | str,
        dest_path: str | os.PathLike[str],
        *,
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
    ) -> Path:
        """Stream one image to ``dest_path`` (created atomically, its folder too); never sends the
        API key. An expired signed URL raises :class:`ImageURLExpiredError` (:meth:`download_images`
        fetches fresh URLs). ``retry`` and ``on_event`` apply to this call only.
        """
        url = image.image_url if isinstance(image, ResultImage) else image
        saved = await self._transport.download(url, Path(dest_path), retry=retry, on_event=on_event)
        return saved.path

    async def download_images(
        self,
        result: TaskResult,
        dest_dir: str | os.PathLike[str],
        *,
        stem: str = "",
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
    ) -> list[Path]:
        """Download every image of ``result`` to ``dest_dir/<stem><n>.<ext>`` (n from 0, ``ext``
        the image's ``image_type``: ``png``, ``jpeg``, ``webp``).

        Expired URLs are renewed by fetching the task result again, at most
        ``RetryPolicy.expired_url_refreshes`` times for the whole call; with each GET retried per
        the policy, one image costs at most ``attempts * (1 + expired_url_refreshes)`` GETs (9 by
        default). ``retry`` overrides the client's policy for this call; ``on_event`` hears its
        retries (each renewal is one, ``IMAGE_URL_EXPIRED``) and its failure.
        """
        saved = await self._download_images(result, dest_dir, stem, retry, on_event)
        return [image.path for image in saved]

    async def _download_images(
        self,
        result: TaskResult,
        dest_dir: str | os.PathLike[str],
        stem: str = "",
        retry: RetryPolicy | None = None,
        on_event: EventHook | None = None,
    ) -> list[Downloaded]:
        """:meth:`download_images` with each file's size and SHA-256, hashed as it streamed."""
        policy = retry or self._config.retry
        fetch = functools.partial(self.get_task_result, retry=policy, on_event=on_event)
        renewal = Renewal(result, policy.expired_url_refreshes, fetch)

        async def one(index: int) -> Downloaded:
            image = result.images[index]
            dest = Path(dest_dir, f"{stem}{index}.{image_extension(image)}")
            renew = functools.partial(renewal, index)
            return await self._transport.download(
                image.image_url, dest, retry=retry, on_event=on_event, renew=renew
            )

        return await map_limited(one, range(len(result.images)), len(result.images) or 1)

    async def list_models(
        self,
        *,
        types: str | Sequence[str] | None = "checkpoint",
        is_sdxl: bool | None = True,
        query: str | None = None,
        visibility: str | None = None,
        source: str | None = None,
        is_inpainting: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Model]:
        """Every model matching the filters (``GET /v3/model``), in pages of ``page_size``.

        ``types`` is one model type or several (a list, or comma-separated); a filter left as
        ``None`` filters nothing out. A listing that repeats a cursor (and so would never end) is
        an :class:`InvalidResponseError`.
        """
        kinds = [types] if isinstance(types, str) else list(types or ())
        kinds = [k.strip() for kind in kinds for k in kind.split(",") if k.strip()]
        if unknown := [kind for kind in kinds if kind not in _spec.MODEL_TYPES]:
            allowed = ", ".join(_spec.MODEL_TYPES)
            raise ValidationError("types", unknown[0], f"must be one of {allowed}")
        if visibility is not None and visibility not in ("public", "private"):
            raise ValidationError("visibility", visibility, "must be public or private")
        if not isinstance(page_size, int) or page_size not in _spec.Range(1, 100):
            raise ValidationError("page_size", page_size, "must be an integer in [1, 100]")
        params = {"pagination.limit": str(page_size)}
        if kinds:
            params["filter.types"] = ",".join(kinds)
        for name, value in (("query", query), ("visibility", visibility),
                            ("source", source), ("is_sdxl", is_sdxl),
                            ("is_inpainting", is_inpainting)):  # fmt: skip
            if value is not None:
                params[f"filter.{name}"] = str(value).lower() if isinstance(value, bool) else value
        seen: set[str] = set()
        while True:
            answer = await self._transport.call_json(
                "GET", "models", self._config.api_url("/v3/model"), auth=True, params=params
            )
            page: ModelPage = structure(answer, ModelPage)
            for model in page.models:
                yield model
            if not (cursor := page.next_cursor):
                return
            if cursor in seen:
                raise InvalidResponseError(f"the model listing repeated cursor {cursor!r}")
            seen.add(cursor)
            params["pagination.cursor"] = cursor

    async def instant_id(
        self,
        request: InstantIDRequest,
        *,
        face_images: Sequence[UploadSource],
        ref_images: Sequence[UploadSource],
        out_dir: str | os.PathLike[str],
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
    ) -> InstantIDOutcome:
        """Upload the images, submit ``request`` with their ids, wait, and download into
        ``out_dir`` (``0.png``, ...). ``request``'s own asset ids, if any, are replaced."""
        ids = await self.upload_assets([*face_images, *ref_images])
        request = attrs.evolve(
            request,
            face_image_assets_ids=ids[: len(face_images)],
            ref_image_assets_ids=ids[len(face_images) :],
        )
        task_id = await self.submit(request)
        result = await self.wait_for_task(
            task_id, timeout=timeout, poll=poll, on_progress=on_progress
        )
        files = await self.download_images(result, out_dir)
        return InstantIDOutcome(task_id=task_id, result=result, files=tuple(files))


async def map_limited(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``[await fn(item) for item in items]``, at most ``limit`` at a time, results in order. The
    first exception cancels the rest and is raised as it is (not in an exception group)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(items) == 1:  # nothing to run beside it: no task group needed
        return [await fn(items[0])]
    results: list[R | None] = [None] * len(items)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(limit)

    async def run(index: int, item: T) -> None:
        async with limiter:
            try:
                results[index] = await fn(item)
            except Exception as exc:
                errors.append(exc)
                group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for index, item in enumerate(items):
            group.start_soon(run, index, item)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot was filled: no error occurred
