"""The client, :class:`NovitaClient`: one obvious entry point to the whole InstantID API."""

from __future__ import annotations

import base64
import functools
import os
import tempfile
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
from ._converter import structure, submitted_task_id, unstructure_request
from ._exceptions import InvalidResponseError, ValidationError
from ._failures import RetryPolicy
from ._files import (
    ImageFacts,
    ImageProblem,
    UploadSource,
    check_image,
    check_image_bytes,
    check_same_size,
    image_facts,
    read_source,
    sniff_content_type,
)
from ._http import Downloaded, EventHook, Renewal, Transport, image_extension
from ._models import (
    ImageTaskRequest,
    Img2ImgRequest,
    InpaintingRequest,
    InstantIDRequest,
    Model,
    ModelPage,
    ResultImage,
    TaskRequest,
    TaskResult,
    Txt2ImgRequest,
    UpscaleRequest,
    endpoint_name,
)

if TYPE_CHECKING:
    from .webhooks import WebhookReceiver

__all__ = ["ImageInput", "InstantIDOutcome", "NovitaClient", "TaskOutcome", "map_limited"]

T = TypeVar("T")
R = TypeVar("R")


@attrs.frozen
class TaskOutcome:
    """What a task's coroutine (:meth:`NovitaClient.instant_id`, ``txt2img``, ``img2img``,
    ``inpainting``, ``upscale``) produced: the task, its result, the images saved."""

    task_id: str
    result: TaskResult
    files: tuple[Path, ...]


InstantIDOutcome = TaskOutcome
""":class:`TaskOutcome` under its 0.2.0 name."""


ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview
"""An input image of a v3 image task: a path, its bytes, or an ``http(s)://`` URL."""


def _check_limits(
    name: str, described: str, data: bytes, limits: _spec.InputLimits
) -> tuple[ImageFacts, tuple[int, int]]:
    """``data``'s facts and size in pixels, or :class:`ValidationError` if it breaks ``limits``."""
    facts = image_facts(data)
    try:
        return facts, check_image(facts, limits)
    except ImageProblem as problem:
        raise ValidationError(name, problem.shown(described), problem.allowed) from None


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

    async def submit(
        self,
        request: InstantIDRequest | ImageTaskRequest,
        *,
        images: Mapping[str, ImageInput] | None = None,
        retry: RetryPolicy | None = None,
    ) -> str:
        """Submit a task and return its id (the endpoint follows from the request's type).

        A v3 image request (:class:`Txt2ImgRequest`, :class:`Img2ImgRequest`,
        :class:`InpaintingRequest`, :class:`UpscaleRequest`) takes its input images in
        ``images`` by the names of its ``input_names()`` (``image``, ``mask_image``,
        ``controlnet.units[0].image``, ...): each a path, bytes or URL, read, checked against the
        endpoint's limits and base64-encoded once per content. InstantID's inputs are asset ids
        in the request itself.

        An answer lost after the request was sent raises :class:`SubmitOutcomeUnknownError`
        rather than resubmitting (which could bill twice), unless the client's
        ``RetryPolicy(retry_unknown_submits=True)``. ``retry`` overrides the client's policy for
        this call (the batch runner's hands 429 back at once, to pause every submitter of that
        endpoint together).
        """
        if isinstance(request, ImageTaskRequest):
            encoded = await self._encode_inputs(request, images or {})
            return await self._submit_body(
                endpoint_name(request), request.body(encoded), retry=retry
            )
        if images:
            raise ValidationError("images", sorted(images), "InstantID takes asset ids, not images")
        request.check_submittable()
        return await self._submit_body(
            endpoint_name(request), unstructure_request(request), retry=retry
        )

    async def _encode_inputs(
        self, request: ImageTaskRequest, images: Mapping[str, ImageInput]
    ) -> dict[str, str]:
        """``images`` read, checked and base64-encoded, each distinct content once."""
        needed = request.check_input_names(images)
        encoded: dict[str, str] = {}
        by_content: dict[str, str] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for name in needed:
            if (source := images.get(name)) is None:
                raise ValidationError("images", name, "is required: a path, bytes or a URL")
            slot = request.slot(name)
            data, described = await self._read_input(name, source, slot.limits)
            facts, sizes[name] = _check_limits(name, described, data, slot.limits)
            if slot.same_size_as is not None and slot.same_size_as in sizes:
                try:
                    check_same_size(sizes[name], slot.same_size_as, sizes[slot.same_size_as])
                except ImageProblem as problem:
                    raise ValidationError(name, problem.shown(described), problem.allowed) from None
            if facts.sha256 not in by_content:
                by_content[facts.sha256] = base64.b64encode(data).decode("ascii")
            encoded[name] = by_content[facts.sha256]
        return encoded

    async def _read_input(
        self, name: str, source: ImageInput, limits: _spec.InputLimits
    ) -> tuple[bytes, str]:
        """The bytes of an input image and a short description (never its content); a file
        larger than ``limits`` allow is refused from its size, unread."""
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            with tempfile.TemporaryDirectory(prefix="novita-input-") as folder:
                saved = await self._transport.download(source, Path(folder, "input"))
                data, _ = await read_source(saved.path)
            return data, source.split("?", 1)[0]
        if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
            raise ValidationError(name, type(source).__name__, "must be a path, bytes or a URL")
        if isinstance(source, str | os.PathLike):
            try:
                nbytes = os.stat(source).st_size
            except OSError:
                nbytes = 0  # read_source says why it cannot be read
            try:
                check_image_bytes(nbytes, limits)
            except ImageProblem as problem:
                shown = problem.shown(os.path.basename(source))
                raise ValidationError(name, shown, problem.allowed) from None
        return await read_source(source)

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
        return submitted_task_id(answer)

    async def balance(self) -> float:
        """The account's balance in US dollars (``GET /v3/user``'s ``credit_balance``, which
        counts 1/10,000 USD). Nothing is paid."""
        answer = await self._transport.call_json(
            "GET", "user", self._config.api_url("/v3/user"), auth=True
        )
        credit = answer.get("credit_balance") if isinstance(answer, dict) else None
        if isinstance(credit, str):
            try:
                credit = float(credit.strip())
            except ValueError:
                credit = None
        if isinstance(credit, bool) or not isinstance(credit, int | float) or credit != credit:
            raise InvalidResponseError("the user answer has no numeric credit_balance")
        return credit / _spec.CREDIT_UNITS_PER_DOLLAR

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
    ) -> TaskOutcome:
        """Upload the images, submit ``request`` with their ids, wait, and download into
        ``out_dir`` (``0.png``, ...). ``request``'s own asset ids, if any, are replaced."""
        ids = await self.upload_assets([*face_images, *ref_images])
        request = attrs.evolve(
            request,
            face_image_assets_ids=ids[: len(face_images)],
            ref_image_assets_ids=ids[len(face_images) :],
        )
        return await self._run_task(request, {}, out_dir, timeout, poll, on_progress)

    async def _run_task(
        self,
        request: TaskRequest,
        images: Mapping[str, ImageInput],
        out_dir: str | os.PathLike[str],
        timeout: float,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None,
        on_progress: ProgressHook | None,
    ) -> TaskOutcome:
        task_id = await self.submit(request, images=images)
        result = await self.wait_for_task(
            task_id, timeout=timeout, poll=poll, on_progress=on_progress
        )
        files = await self.download_images(result, out_dir)
        return TaskOutcome(task_id=task_id, result=result, files=tuple(files))

    async def txt2img(
        self,
        request: Txt2ImgRequest,
        *,
        out_dir: str | os.PathLike[str],
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
    ) -> TaskOutcome:
        """Submit ``request``, wait, and download its images into ``out_dir`` (``0.png``, ...)."""
        return await self._run_task(request, {}, out_dir, timeout, poll, on_progress)

    async def img2img(
        self,
        request: Img2ImgRequest,
        *,
        image: ImageInput,
        controlnet_images: Sequence[ImageInput] = (),
        ip_adapter_images: Sequence[ImageInput] = (),
        out_dir: str | os.PathLike[str],
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
    ) -> TaskOutcome:
        """:meth:`txt2img` from ``image``, with one image per ControlNet unit and IP-Adapter of
        ``request`` (in their order)."""
        images: dict[str, ImageInput] = {"image": image}
        images.update(_indexed("controlnet.units", controlnet_images))
        images.update(_indexed("ip_adapters", ip_adapter_images))
        return await self._run_task(request, images, out_dir, timeout, poll, on_progress)

    async def inpainting(
        self,
        request: InpaintingRequest,
        *,
        image: ImageInput,
        mask_image: ImageInput,
        out_dir: str | os.PathLike[str],
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
    ) -> TaskOutcome:
        """:meth:`txt2img` repainting ``image`` where ``mask_image`` (of its resolution) says."""
        images = {"image": image, "mask_image": mask_image}
        return await self._run_task(request, images, out_dir, timeout, poll, on_progress)

    async def upscale(
        self,
        request: UpscaleRequest,
        *,
        image: ImageInput,
        out_dir: str | os.PathLike[str],
        timeout: float = 600.0,  # noqa: ASYNC109  (a deadline for the task, not for one call)
        poll: PollPolicy | None = None,
        on_progress: ProgressHook | None = None,
    ) -> TaskOutcome:
        """:meth:`txt2img` enlarging ``image`` by ``request.scale_factor``."""
        return await self._run_task(request, {"image": image}, out_dir, timeout, poll, on_progress)


def _indexed(prefix: str, sources: Sequence[ImageInput]) -> dict[str, ImageInput]:
    if isinstance(sources, str | bytes | bytearray | memoryview | os.PathLike):
        raise ValidationError(f"{prefix} images", type(sources).__name__, "must be a list")
    return {f"{prefix}[{index}].image": source for index, source in enumerate(sources)}


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
