"""Job files: one JSON object per line, read lazily, each line a job or an error naming its field.

A line looks like::

    {"id": "anna-beach", "face_images": ["faces/anna.png"], "ref_images": ["refs/beach.jpg"],
     "prompt": "a woman on a beach", "steps": 30}

``id`` defaults to the line number; image paths are relative to the job file's folder, or http(s)
URLs (fetched once, without credentials, into a cache folder in the output); every other key is a
request field with the API's name, and the command-line flags fill in what a line leaves out.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiofiles
import aiohttp
import anyio
import attrs
import yarl

from .._exceptions import ValidationError
from .._models import InstantIDRequest
from .._redact import redact_url
from .._sources import NotRegularFileError, open_regular, sniff_content_type
from ..batch import JobInputError, check_job_id
from ._fields import build_request, merge_fields

__all__ = ["InputFetcher", "JobLine", "LineError", "count_lines", "read_job_file"]

_IMAGE_LISTS = ("face_images", "ref_images", "face_kps_images")


@attrs.frozen
class JobLine:
    """One valid line of a job file: what the batch runner needs to run it."""

    line: int
    id: str
    face_images: tuple[Path, ...]
    ref_images: tuple[Path, ...]
    request: InstantIDRequest
    face_kps_images: tuple[Path, ...] | None = None


@attrs.frozen
class LineError:
    """A line that cannot become a job; the run reports it and goes on with the others."""

    line: int
    id: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field {self.field}" if self.field else "")
        return f"{where}: {self.message}"


class _LineProblem(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message


class InputFetcher:
    """Fetches http(s) inputs into ``cache_dir`` once (a rerun finds them there), without auth."""

    def __init__(self, session: aiohttp.ClientSession, cache_dir: Path) -> None:
        self._session = session
        self._cache_dir = cache_dir

    async def fetch(self, url: str) -> Path:
        parsed = yarl.URL(url)
        suffix = Path(parsed.path).suffix[:8]
        target = self._cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
        if await anyio.Path(target).is_file():
            return target
        await anyio.Path(self._cache_dir).mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self._cache_dir, prefix=".part-")
        os.close(fd)
        try:
            # A plain session with no default headers: an input URL never sees the API key.
            async with self._session.get(parsed) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status} from {redact_url(parsed)}")
                async with aiofiles.open(temp, "wb") as sink:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        await sink.write(chunk)
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return target


def _image_list(raw: Mapping[str, Any], name: str, required: bool) -> list[tuple[str, str]] | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise _LineProblem(name, "is required")
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _LineProblem(name, "must be a non-empty list of file paths or URLs")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _LineProblem(f"{name}[{index}]", f"must be a file path or URL, got {item!r}")
        items.append((f"{name}[{index}]", item))
    return items


def _load(text: str, line: int) -> tuple[str, dict[str, Any]]:
    """The line's id and its other keys."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _LineProblem(None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise _LineProblem(None, "must be a JSON object")
    job_id = raw.pop("id", None)
    if job_id is None:
        return str(line), raw
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return str(job_id), raw
    if not isinstance(job_id, str) or not job_id:
        raise _LineProblem("id", f"must be a non-empty string, got {job_id!r}")
    return job_id, raw


def _request(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> InstantIDRequest:
    fields = {k: v for k, v in raw.items() if k not in _IMAGE_LISTS}
    try:
        return build_request(merge_fields(defaults, fields))
    except ValidationError as exc:
        raise _LineProblem(exc.field, f"{exc.value!r} is not allowed: {exc.allowed}") from None


_BLOCK = 64 * 1024


class _LocalFiles:
    """What is wrong with each local input file, if anything, asked once per path.

    A batch names the same few faces and references on thousands of lines: each path is checked
    (a regular file, starting like a PNG, JPEG or WebP image) in one worker-thread call, once.
    """

    def __init__(self) -> None:
        self._verdicts: dict[Path, str | None] = {}

    async def problems(self, paths: list[Path]) -> list[str | None]:
        unknown = [p for p in dict.fromkeys(paths) if p not in self._verdicts]
        if unknown:
            verdicts = await anyio.to_thread.run_sync(_probe_all, unknown)
            self._verdicts.update(zip(unknown, verdicts, strict=True))
        return [self._verdicts[p] for p in paths]


def _probe_all(paths: list[Path]) -> list[str | None]:
    return [_probe(path) for path in paths]


def _probe(path: Path) -> str | None:
    # Through the library's one checked opening: a FIFO, a device or a socket is refused before
    # it is opened (opening a FIFO waits for a writer, for ever, in a thread no stop can end).
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


async def _resolve(
    items: list[tuple[str, str]],
    base_dir: Path,
    fetcher: InputFetcher | None,
    local: _LocalFiles,
) -> tuple[Path, ...]:
    paths: list[Path] = []
    fields: list[str] = []
    for field, item in items:
        if item.startswith(("http://", "https://")):
            if fetcher is None:
                raise _LineProblem(field, "URLs are not supported here")
            try:
                fetched = await fetcher.fetch(item)
            except (OSError, aiohttp.ClientError, ValueError) as exc:
                raise _LineProblem(field, f"download failed: {exc}") from None
            paths.append(fetched)
        else:
            paths.append(base_dir / item)
        fields.append(field)
    for field, problem in zip(fields, await local.problems(paths), strict=True):
        if problem is not None:
            raise _LineProblem(field, problem)
    return tuple(paths)


async def _lines(path: Path) -> AsyncIterator[str]:
    """The lines of ``path``, read in blocks (one worker-thread call per block, not per line).

    A UTF-8 byte-order mark at the start (some editors write one) is not part of the first line.
    """
    async with aiofiles.open(path, "rb") as source:
        rest = b""
        first = True
        while block := await source.read(_BLOCK):
            if first:
                block, first = block.removeprefix(codecs.BOM_UTF8), False
            *complete, rest = (rest + block).split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace")


async def read_job_file(
    path: Path,
    defaults: Mapping[str, Any] | None = None,
    fetcher: InputFetcher | None = None,
) -> AsyncIterator[JobLine | LineError]:
    """Each non-blank line of ``path`` in order, as a :class:`JobLine` or a :class:`LineError`.

    ``defaults`` holds request fields (API names) for keys a line leaves out. Lines are read a
    block at a time, so a job file of any size costs memory only for the jobs the consumer holds.
    """
    defaults = defaults or {}
    base_dir = path.parent
    local = _LocalFiles()
    line = 0
    async for text in _lines(path):
        line += 1
        if not text.strip():  # as _blank decides
            continue
        job_id = str(line)
        try:
            job_id, raw = _load(text, line)
            try:
                check_job_id(job_id)
            except JobInputError as exc:
                raise _LineProblem("id", str(exc)) from None
            images = {
                name: _image_list(raw, name, name != "face_kps_images") for name in _IMAGE_LISTS
            }
            request = _request(raw, defaults)
            faces = await _resolve(images["face_images"] or [], base_dir, fetcher, local)
            refs = await _resolve(images["ref_images"] or [], base_dir, fetcher, local)
            kps_items = images["face_kps_images"]
            kps = None if kps_items is None else await _resolve(kps_items, base_dir, fetcher, local)
            if kps is not None and len(kps) != len(faces):
                raise _LineProblem(
                    "face_kps_images", f"must list one file per face image ({len(faces)})"
                )
        except _LineProblem as problem:
            yield LineError(line, job_id, problem.field, problem.message)
            continue
        yield JobLine(line, job_id, faces, refs, request, kps)


def count_lines(path: Path) -> int:
    """How many jobs ``path`` holds (its non-blank lines, blank as :func:`read_job_file` sees
    them), read a line at a time: a progress bar's total, and what a run that stops early
    did not reach."""
    with path.open("rb") as source:
        first = source.readline().removeprefix(codecs.BOM_UTF8)
        return sum(1 for raw in itertools.chain([first], source) if not _blank(raw))


def _blank(raw: bytes) -> bool:
    return not raw.decode("utf-8", "replace").strip()
