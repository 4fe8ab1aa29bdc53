"""The job file and its jobs: what the batch runner is given, read lazily, and what it gives back.

A job file holds one JSON object per line, such as ``{"id": "anna-beach", "face_images":
["faces/anna.png"], "ref_images": ["refs/beach.jpg"], "prompt": "a woman on a beach"}``: ``id``
defaults to the line number; images are paths relative to the file's folder or http(s) URLs;
every other key is a request field (API names) over the defaults given. A line that cannot be a
job is an :class:`InvalidJob` naming its line and field. A :class:`Job` checks only types when
built: one bad job among thousands is one failed :class:`JobOutcome`, not an exception.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import enum
import hashlib
import itertools
import json
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import aiofiles
import aiohttp
import anyio
import attrs
import yarl

from .._config import redact_url
from .._exceptions import LocalIOError, NovitaError, ValidationError
from .._files import NotRegularFileError, open_regular, sniff_content_type, stream_to_file
from .._models import TASKS, ImageTaskRequest, InstantIDRequest, TaskRequest, merge_fields

__all__ = [
    "ImageSource", "InvalidJob", "Job", "JobError", "JobInputError", "JobOutcome", "JobSource",
    "JobStatus", "build_request", "check_job_id", "count_jobs", "job_ids", "read_job_lines",
    "read_jobs",
]  # fmt: skip

ImageSource: TypeAlias = str | os.PathLike[str] | bytes
"""A file path or the image's bytes."""

INSTANT_ID: str = InstantIDRequest.task
"""The task of a job that names none (and of a record or results line that names none)."""


class JobStatus(enum.StrEnum):
    """How a job ended; its value is what ``results.jsonl`` says."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobInputError(NovitaError, ValueError):
    """A job cannot be run as given (bad id, missing or unreadable file, not an image)."""

    def __init__(self, reason: str, message: str) -> None:
        self._reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[type[JobInputError], tuple[str, str]]:
        # Crosses processes whole (an InvalidJob sent to a Ray shard).
        return (type(self), (self._reason, str(self)))

    @property
    def reason(self) -> str:
        return self._reason


# Names the runner itself writes in OUT; a job id may not be one of them.
RESERVED_NAMES = frozenset({"results.jsonl"})
MAX_JOB_ID_LENGTH = 200
# C0, DEL and C1 (\x9b is a terminal's CSI as \x1b[ is): none belongs in a file name.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_job_id(job_id: str) -> None:
    """Raise :class:`JobInputError` unless ``job_id`` can name files directly inside OUT."""
    problem = ""
    if not job_id:
        problem = "is empty"
    elif job_id.startswith("."):
        problem = "starts with '.' (names like '..' escape OUT; hidden names are reserved)"
    elif "/" in job_id or "\\" in job_id:
        problem = "contains a path separator"
    elif os.path.isabs(job_id) or (len(job_id) > 1 and job_id[1] == ":"):
        problem = "is an absolute path"
    elif _CONTROL_CHARACTER.search(job_id):
        problem = "contains a control character"
    elif job_id in RESERVED_NAMES:
        problem = "is a file name the runner uses"
    elif len(job_id) > MAX_JOB_ID_LENGTH:
        problem = f"is longer than {MAX_JOB_ID_LENGTH} characters"
    if problem:
        raise JobInputError("INVALID_JOB_ID", f"job id {job_id!r} {problem}")


# --- jobs -------------------------------------------------------------------------------------


def _sources(value: Iterable[ImageSource] | ImageSource) -> tuple[ImageSource, ...]:
    # A single path or bytes object is one image, not a sequence of characters.
    if isinstance(value, str | bytes | os.PathLike):
        return (value,)
    return tuple(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_sources(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    for item in value or ():  # type: ignore[attr-defined]
        if not isinstance(item, str | bytes | os.PathLike):
            raise TypeError(f"Job.{attribute.name} items must be paths or bytes, not {item!r}")


def _shown(source: ImageSource) -> str:
    # Image bytes would flood a log line; show their size instead.
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else repr(os.fspath(source))


def _short_repr(sources: tuple[ImageSource, ...] | None) -> str:
    if sources is None:
        return "None"
    return "[" + ", ".join(map(_shown, sources)) + "]"


def _inputs(value: Mapping[str, ImageSource] | None) -> dict[str, ImageSource]:
    return dict(value or {})


def _check_inputs(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, object]) -> None:
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str | bytes | os.PathLike):
            message = f"Job.inputs maps input names to paths or bytes, not {name!r}: {item!r}"
            raise TypeError(message)


def _inputs_repr(inputs: Mapping[str, ImageSource]) -> str:
    return "{" + ", ".join(f"{name!r}: {_shown(s)}" for name, s in inputs.items()) + "}"


@attrs.frozen
class Job:
    """One task to run: its request and its input images.

    - InstantID (an :class:`InstantIDRequest`): the faces and references to upload. ``request``
      is a template: the runner fills its ``face_image_assets_ids``, ``ref_image_assets_ids`` and
      ``face_kps_assets_ids`` after uploading the images.
    - A v3 image task (:class:`Txt2ImgRequest`, ...): ``inputs`` maps each of the request's
      ``input_names()`` (``image``, ``mask_image``, ``controlnet.units[0].image``, ...) to its
      image, sent inline (base64) with the submission; no upload.
    """

    id: str = attrs.field(validator=attrs.validators.instance_of(str))
    face_images: tuple[ImageSource, ...] = attrs.field(
        default=(), converter=_sources, validator=_check_sources, repr=_short_repr
    )
    ref_images: tuple[ImageSource, ...] = attrs.field(
        default=(), converter=_sources, validator=_check_sources, repr=_short_repr
    )
    # A default only so that a v3 job can be made by keywords without faces; None is refused.
    request: TaskRequest = attrs.field(
        default=None, validator=attrs.validators.instance_of((InstantIDRequest, ImageTaskRequest))
    )
    face_kps_images: tuple[ImageSource, ...] | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(_sources),
        validator=_check_sources,
        repr=_short_repr,
    )
    inputs: Mapping[str, ImageSource] = attrs.field(
        factory=dict, converter=_inputs, validator=_check_inputs, repr=_inputs_repr, hash=False
    )

    @property
    def task(self) -> str:
        """The job's task: ``instant-id``, ``txt2img``, ``img2img``, ``inpainting``, ``upscale``."""
        return self.request.task

    @classmethod
    def from_dict(
        cls,
        line: Mapping[str, Any],
        *,
        base_dir: str | os.PathLike[str] = ".",
        defaults: Mapping[str, Any] | None = None,
        task_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        """The job of a job file's line (a dict with an ``id``), its image paths relative to
        ``base_dir``, or :class:`ValidationError` naming the field. Only :func:`read_jobs`
        fetches URLs and checks that the files are images. ``defaults`` and ``task_defaults``
        are :func:`read_jobs`' own."""
        try:
            job_id, images, request = _parse(line, None, defaults or {}, task_defaults or {})
        except _LineProblem as problem:
            field = problem.field or "line"
            value = line.get(field, line) if isinstance(line, Mapping) else line
            raise ValidationError(field, value, problem.message) from None
        for field, item in itertools.chain(*(items or () for items in images.values())):
            if item.startswith(("http://", "https://")):
                raise ValidationError(field, item, "URLs are fetched by read_jobs only")
        paths = {
            name: None if items is None else tuple(Path(base_dir, item) for _, item in items)
            for name, items in images.items()
        }
        return _job(job_id, request, paths)


@attrs.frozen
class InvalidJob:
    """An input that cannot become a :class:`Job` (e.g. a job-file line that does not parse).

    :meth:`BatchRunner.run` takes it alongside jobs and ends it as a failed outcome with
    ``error``'s reason, recorded in the journal and ``results.jsonl`` like any failed job.
    """

    id: str = attrs.field(validator=attrs.validators.instance_of(str))
    error: NovitaError = attrs.field(validator=attrs.validators.instance_of(NovitaError))
    task: str = INSTANT_ID
    """The task the line names, when it names a known one: its outcome's."""


JobInput: TypeAlias = "Job | InvalidJob"
"""What :meth:`BatchRunner.run` reads from its input."""


@attrs.frozen
class JobError:
    """Why a job failed: the error's class name, its reason tag, and a readable message."""

    type: str
    reason: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobError:
        reason = exc.reason if isinstance(exc, NovitaError) else type(exc).__name__.upper()
        return cls(type=type(exc).__name__, reason=reason, message=str(exc))


@attrs.frozen
class JobOutcome:
    """How one job ended.

    ``files`` are POSIX paths relative to the output folder. ``replayed`` is true when the job had
    already ended in an earlier run with the same output folder and nothing was done this time.
    ``task`` is the job's task (``instant-id``, ``txt2img``, ...; see :data:`TASK_NAMES`).
    """

    job_id: str
    status: JobStatus = attrs.field(converter=JobStatus)
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    error: JobError | None = None
    replayed: bool = False
    task: str = INSTANT_ID

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.SUCCEEDED


# --- a line's fields --------------------------------------------------------------------------

# Asset ids come from uploading a job's images; a job names files, not ids.
_ASSET_FIELDS = frozenset({"face_image_assets_ids", "ref_image_assets_ids", "face_kps_assets_ids"})
_IMAGE_LISTS = ("face_images", "ref_images", "face_kps_images")


def build_request(fields: Mapping[str, Any]) -> InstantIDRequest:
    """The request of a job's or the flags' fields (no asset ids), or :class:`ValidationError`."""
    for name in _ASSET_FIELDS & fields.keys():
        raise ValidationError(name, fields[name], "jobs name image files, not asset ids")
    return InstantIDRequest.from_dict(fields)


class _LineProblem(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message


def _load(raw: object, line: int | None) -> tuple[str, dict[str, Any]]:
    """The line's id (its number if it has none) and its other keys."""
    if not isinstance(raw, Mapping):
        raise _LineProblem(None, "must be a JSON object")
    fields = dict(raw)
    job_id = fields.pop("id", None)
    if job_id is None and line is not None:
        job_id = str(line)
    elif isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    elif not isinstance(job_id, str) or not job_id:
        raise _LineProblem("id", f"must be a non-empty string, got {job_id!r}")
    return job_id, fields


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _LineProblem(None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def _line_fields(text: str, line: int) -> tuple[str, dict[str, Any]]:
    """A line's id as a run names it (its number if it has none), whether or not it is valid,
    and its object's other keys (none for a line that is not an object with a usable id)."""
    try:
        return _load(_json(text), line)
    except _LineProblem:
        return str(line), {}


def _line_id(text: str, line: int) -> tuple[str, str]:
    """A line's id as a run names it and its task (InstantID's unless it names another known
    one)."""
    job_id, fields = _line_fields(text, line)
    task = fields.get("task")
    return job_id, task if isinstance(task, str) and task in TASKS else INSTANT_ID


def _image_list(raw: Mapping[str, Any], name: str) -> list[tuple[str, str]] | None:
    value = raw.get(name)
    if value is None:
        if name != "face_kps_images":
            raise _LineProblem(name, "is required")
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _LineProblem(name, "must be a non-empty list of file paths or URLs")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _LineProblem(f"{name}[{index}]", f"must be a file path or URL, got {item!r}")
    return [(f"{name}[{index}]", item) for index, item in enumerate(value)]


_Images = dict[str, list[tuple[str, str]] | None]


def _parse(
    raw: object,
    line: int | None,
    defaults: Mapping[str, Any],
    task_defaults: Mapping[str, Mapping[str, Any]],
) -> tuple[str, _Images, TaskRequest]:
    """A line's id, its images by input (``(field, item)`` pairs) and its request over the
    defaults of its task; a bad request field is a :class:`ValidationError`."""
    job_id, fields = _load(raw, line)
    try:
        check_job_id(job_id)
    except JobInputError as exc:
        raise _LineProblem("id", str(exc)) from None
    task = fields.pop("task", InstantIDRequest.task)
    if task == InstantIDRequest.task:
        images: _Images = {name: _image_list(fields, name) for name in _IMAGE_LISTS}
        faces, kps = images["face_images"] or (), images["face_kps_images"]
        if kps is not None and len(kps) != len(faces):
            raise _LineProblem(
                "face_kps_images", f"must list one file per face image ({len(faces)})"
            )
        request_fields = {k: v for k, v in fields.items() if k not in _IMAGE_LISTS}
        over = merge_fields(defaults, task_defaults.get(task) or {})
        return job_id, images, build_request(merge_fields(over, request_fields))
    kind = TASKS.get(task) if isinstance(task, str) else None
    if kind is None:
        choices = ", ".join((InstantIDRequest.task, *TASKS))
        raise _LineProblem("task", f"must be one of {choices}, got {task!r}")
    for name in (*_IMAGE_LISTS, *(k for k in fields if k.endswith("_base64"))):
        if name in fields:
            raise _LineProblem(
                name,
                f"is not a {task} field: name input images by the API's field less "
                "'_base64' (image, mask_image), as a file path or URL",
            )
    given, request_fields = _take_inputs(kind, fields)
    request = kind.from_dict(request_fields, defaults=task_defaults.get(task))
    images = {}
    for name in request.input_names():
        item = given.pop(name, None)
        if not isinstance(item, str) or not item:
            problem = "is required" if item is None else f"must be a file path or URL, got {item!r}"
            raise _LineProblem(name, problem)
        images[name] = [(name, item)]
    return job_id, images, request


def _take_inputs(
    kind: type[ImageTaskRequest], fields: Mapping[str, Any]
) -> tuple[dict[str, object], dict[str, Any]]:
    """The input images a v3 line names (by input name, such as ``controlnet.units[0].image``)
    and its other fields, the images taken out (the line itself is left as it was)."""
    rest = copy.deepcopy(dict(fields))
    given: dict[str, object] = {}
    for slot in kind.inputs:
        if slot.items is None:
            if slot.name in rest:
                given[slot.name] = rest.pop(slot.name)
            continue
        where, field = slot.items
        items: Any = rest
        for part in where.split("."):
            items = items.get(part) if isinstance(items, dict) else None
        for index, item in enumerate(items if isinstance(items, list) else ()):
            if isinstance(item, dict) and field in item:
                given[f"{where}[{index}].{field}"] = item.pop(field)
    return given, rest


def _job(job_id: str, request: TaskRequest, paths: Mapping[str, tuple[Any, ...] | None]) -> Job:
    if isinstance(request, InstantIDRequest):
        faces, refs = paths["face_images"] or (), paths["ref_images"] or ()
        return Job(job_id, faces, refs, request, paths["face_kps_images"])
    return Job(job_id, request=request, inputs={n: p[0] for n, p in paths.items() if p})


# --- reading a job file -----------------------------------------------------------------------


class _Inputs:
    """A job file's images as local paths: URLs fetched once into ``cache_dir`` (a rerun finds
    them there); each file's problem asked once per path (thousands of lines name few faces)."""

    def __init__(
        self, base_dir: Path, session: aiohttp.ClientSession | None, cache_dir: Path | None
    ) -> None:
        self._base_dir = base_dir
        self._session = session
        self._cache_dir = cache_dir
        self._verdicts: dict[Path, str | None] = {}

    async def resolve(self, items: list[tuple[str, str]]) -> tuple[Path, ...]:
        paths: list[Path] = []
        for field, item in items:
            if not item.startswith(("http://", "https://")):
                paths.append(self._base_dir / item)
                continue
            if self._session is None:
                raise _LineProblem(field, "URLs are not supported here")
            try:
                paths.append(await self._fetch(self._session, item))
            except (OSError, LocalIOError, aiohttp.ClientError, ValueError) as exc:
                raise _LineProblem(field, f"download failed: {exc}") from None
        if unknown := [p for p in dict.fromkeys(paths) if p not in self._verdicts]:
            verdicts = await anyio.to_thread.run_sync(lambda: [_probe(p) for p in unknown])
            self._verdicts.update(zip(unknown, verdicts, strict=True))
        for (field, _), path in zip(items, paths, strict=True):
            if (problem := self._verdicts[path]) is not None:
                raise _LineProblem(field, problem)
        return tuple(paths)

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> Path:
        assert self._cache_dir is not None
        parsed = yarl.URL(url)
        suffix = Path(parsed.path).suffix[:8]
        target = self._cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
        if await anyio.Path(target).is_file():
            return target
        async with session.get(parsed) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status} from {redact_url(parsed)}")
            chunks = response.content.iter_chunked(1 << 16)
            await stream_to_file(chunks, target, doing=f"saving input {redact_url(parsed)}")
        return target


def _probe(path: Path) -> str | None:
    # A FIFO, a device or a socket is refused before it is opened (opening a FIFO waits for a
    # writer, for ever, in a thread no stop can end).
    try:
        with open_regular(str(path)) as handle:
            head = handle.read(16)
    except NotRegularFileError as exc:
        return f"is not a regular file ({exc.kind}): {path}"
    except FileNotFoundError:
        return f"no such file: {path}"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}): {path}"
    if sniff_content_type(head) is None:
        return f"is not a PNG, JPEG or WebP image: {path}"
    return None


async def _lines(path: Path) -> AsyncIterator[tuple[int, str]]:
    """The non-blank lines of ``path`` (as count_jobs decides) and their numbers, read in blocks
    (one worker-thread call per block), without a UTF-8 byte-order mark (some editors write one)."""
    async with aiofiles.open(path, "rb") as source:
        rest = b""
        line = 0
        first = True
        while block := await source.read(64 * 1024):
            if first:
                block, first = block.removeprefix(codecs.BOM_UTF8), False
            *complete, rest = (rest + block).split(b"\n")
            for raw in complete:
                line += 1
                if (text := raw.decode("utf-8", "replace")).strip():
                    yield line, text
        if (text := rest.decode("utf-8", "replace")).strip():
            yield line + 1, text


async def read_jobs(
    path: str | os.PathLike[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    task_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Job | InvalidJob]:
    """Each job of the job file at ``path`` in order, read lazily: a :class:`Job`, or an
    :class:`InvalidJob` whose ``INVALID_JOB_LINE`` error names the line and field.

    A line's ``task`` (``instant-id``, the default, ``txt2img``, ``img2img``, ``inpainting``,
    ``upscale``) says which request its other keys make. ``defaults`` holds InstantID request
    fields (API names) for keys a line leaves out; ``task_defaults`` maps a task's name to its
    own (for InstantID, over ``defaults``). http(s) image URLs are fetched once into
    ``cache_dir`` (refused without one), by a session without credentials.
    """
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if cache_dir is not None:  # a plain session: no default headers, no cookies kept
            plain = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            session = await stack.enter_async_context(plain)
        inputs = _Inputs(Path(path).parent, session, None if cache_dir is None else Path(cache_dir))
        async for line, text in _lines(Path(path)):
            try:
                job_id, images, request = _parse(
                    _json(text), line, defaults or {}, task_defaults or {}
                )
                paths = {
                    name: None if items is None else await inputs.resolve(items)
                    for name, items in images.items()
                }
            except _LineProblem as problem:
                field, message = problem.field, problem.message
            except ValidationError as exc:
                field, message = exc.field, f"{exc.value!r} is not allowed: {exc.allowed}"
            else:
                yield _job(job_id, request, paths)
                continue
            where = f"line {line}" + (f", field {field}" if field else "")
            error = JobInputError("INVALID_JOB_LINE", f"{where}: {message}")
            job_id, task = _line_id(text, line)
            yield InvalidJob(job_id, error, task)


def count_jobs(path: str | os.PathLike[str]) -> int:
    """How many jobs the file at ``path`` holds (its non-blank lines), read a line at a time: a
    progress bar's total, and what a run that stops early did not reach. Blocking."""
    with open(path, "rb") as source:
        first = source.readline().removeprefix(codecs.BOM_UTF8)
        lines = itertools.chain([first], source)
        return sum(1 for raw in lines if raw.decode("utf-8", "replace").strip())


async def job_ids(path: str | os.PathLike[str]) -> set[str]:
    """The ids of the jobs of a job file, as a run names them (a line's id defaults to its
    number, an invalid line's too), whether or not the rest of each line is valid."""
    return {job_id async for job_id, _ in read_job_lines(path)}


async def read_job_lines(path: str | os.PathLike[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Each line of the job file at ``path``, unchecked: its id as a run names it (as
    :func:`job_ids`) and its JSON object's other keys (empty for a line that is not an object),
    for what goes around a run (its gallery, checks of the file as a whole)."""
    async for line, text in _lines(Path(path)):
        yield _line_fields(text, line)


# --- the run's input --------------------------------------------------------------------------


class _Shard(Protocol):
    def owns(self, job_id: str) -> bool: ...


async def _each(jobs: Iterator[JobInput]) -> AsyncIterator[JobInput]:
    try:
        for job in jobs:
            yield job
    finally:
        if isinstance(jobs, Generator):
            jobs.close()


class JobSource:
    """The run's input, read one job at a time by many workers, lazily; closed when the run
    stops. A sharded run reads every job and is given only its own."""

    def __init__(
        self, jobs: Iterable[JobInput] | AsyncIterable[JobInput], shard: _Shard | None = None
    ) -> None:
        self._shard = shard
        self._jobs = aiter(jobs) if isinstance(jobs, AsyncIterable) else _each(iter(jobs))
        # An async iterator cannot be advanced by two tasks at once.
        self._reading = anyio.Lock(fast_acquire=True)
        self._exhausted = False

    async def next(self) -> JobInput | None:
        """The next job (of this shard), or None once the input is exhausted."""
        while True:
            async with self._reading:
                if self._exhausted:
                    return None
                try:
                    job: object = await anext(self._jobs)
                except StopAsyncIteration:
                    self._exhausted = True
                    return None
            if not isinstance(job, Job | InvalidJob):
                raise TypeError(f"jobs must be Job or InvalidJob objects, got {job!r}")
            if self._shard is None or self._shard.owns(job.id):
                return job

    async def __aenter__(self) -> JobSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A generator given is closed now, not whenever it is collected (its finally blocks run).
        if (aclose := getattr(self._jobs, "aclose", None)) is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
