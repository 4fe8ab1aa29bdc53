"""A job's inputs: read, checked, hashed, fingerprinted, then uploaded once per asset endpoint
(InstantID) or base64-encoded once per content within a byte budget (a v3 task's inline images).

- **Read and hashed** in a worker thread, never held whole; a file seen before with the same stat
  (device, inode, size, modification time) is not read again, and the jobs asking at the same
  moment share one read (:mod:`novita_async._singleflight`). What is not a regular file (a FIFO,
  a directory, a device) is refused unopened, with ``INPUT_NOT_A_FILE``: a FIFO would block.
- **Fingerprinted**: a hash of the request template and of every input's content lets a rerun
  tell "the same job" from "a different job under the same id".
- **Uploaded once**, per run and across runs through the journal, keyed by the asset endpoint
  (the asset URL's origin and path: an id is never sent to another endpoint) and the content's
  SHA-256. A failed upload is not remembered. The upload checks the file still has its hash.
- An id from the journal may be one the service has since forgotten (it documents no asset
  lifetime): :meth:`AssetUploader.asset_id` says which ids came from there, so a refused
  submission can drop them (:meth:`AssetUploader.forget`) and upload the files again.
- **Checked against the endpoint's limits** (a v3 task's inputs) when the job is prepared, before
  anything is sent: bytes, pixels, sides, a mask's resolution, by the client's own checker
  (:func:`novita_async._files.check_image`). A file over the byte limit is refused from its
  stat, unread; the rest is read once per stat key, with its hash.
- **Encoded once, within a budget** (:class:`InputEncoder`): only for the time of a submission,
  each content once however many jobs send it at once, and no more base64 held at once than the
  budget (one input larger than the budget goes alone). No base64 goes into a fingerprint, the
  journal, a log line, a repr or an error: only hashes, sizes and paths do.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs
import yarl

from .._client import NovitaClient
from .._converter import unstructure_request
from .._exceptions import ValidationError
from .._files import (
    ImageFacts,
    ImageProblem,
    NotRegularFileError,
    check_image,
    check_image_bytes,
    check_regular,
    check_same_size,
    image_facts,
    image_file_facts,
    open_regular,
)
from .._models import ImageTaskRequest
from .._singleflight import SingleFlight
from .._spec import InputLimits
from ._jobs import ImageSource, Job, JobInputError, _shown
from ._journal import AssetKey, Journal
from ._options import BatchOptions

logger = logging.getLogger("novita_async.batch")

__all__ = [
    "AssetUploader", "InputEncoder", "InputReader", "PreparedImage", "PreparedJob",
    "asset_endpoint",
]  # fmt: skip


@attrs.frozen
class PreparedImage:
    source: ImageSource = attrs.field(repr=_shown)  # a path, or the bytes' length
    sha256: str
    content_type: str
    nbytes: int
    """The content's length, which its base64 is budgeted by (and a file must still have)."""
    size: tuple[int, int] | None = None
    """Width and height, where the header gives them."""


@attrs.frozen
class PreparedJob:
    faces: tuple[PreparedImage, ...]
    refs: tuple[PreparedImage, ...]
    kps: tuple[PreparedImage, ...] | None
    fingerprint: str
    body: dict[str, Any] = attrs.field(eq=False, repr=False)
    """The request's JSON body without its inputs: InstantID's without the asset ids, which the
    runner fills in after upload; a v3 task's with each input's SHA-256 where its base64 goes,
    which :class:`InputEncoder` gives at submission."""
    inputs: tuple[tuple[str, PreparedImage], ...] = ()
    """A v3 task's inline inputs by name (``image``, ``mask_image``, ...)."""


ASSET_FIELDS = ("face_image_assets_ids", "ref_image_assets_ids", "face_kps_assets_ids")
_StatKey = tuple[int, int, int, int]
# Built once (json.dumps builds an encoder per call); sorted keys make the text canonical.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=list)


class InputReader:
    def __init__(self, cache_size: int = 4096) -> None:
        self._files: SingleFlight[_StatKey, ImageFacts] = SingleFlight(cache_size)
        self.reads = 0
        """Files read and hashed so far (once per stat key while remembered)."""

    async def prepare(self, job: Job) -> PreparedJob:
        """Hash and check every input of ``job``; :class:`JobInputError` if one is bad."""
        if isinstance(job.request, ImageTaskRequest):
            return await self._prepare_inline(job, job.request)
        if not job.face_images:
            raise JobInputError("INVALID_JOB", f"job {job.id!r} has no face images")
        if not job.ref_images:
            raise JobInputError("INVALID_JOB", f"job {job.id!r} has no reference images")
        if job.face_kps_images is not None and len(job.face_kps_images) != len(job.face_images):
            raise JobInputError(
                "INVALID_JOB",
                f"job {job.id!r} has {len(job.face_kps_images)} face keypoint images for "
                f"{len(job.face_images)} face images; they must pair up",
            )
        images = await self.images(
            (*job.face_images, *job.ref_images, *(job.face_kps_images or ()))
        )
        n_faces, n_refs = len(job.face_images), len(job.ref_images)
        faces, refs = images[:n_faces], images[n_faces : n_faces + n_refs]
        kps = None if job.face_kps_images is None else images[n_faces + n_refs :]
        body = unstructure_request(job.request)
        for filled_by_the_runner in ASSET_FIELDS:
            body.pop(filled_by_the_runner, None)
        # The fingerprint: a hash of the request body (asset ids left out) and every input's.
        described = {
            "request": body,
            "face_images": [i.sha256 for i in faces],
            "ref_images": [i.sha256 for i in refs],
            "face_kps_images": None if kps is None else [i.sha256 for i in kps],
        }
        fingerprint = hashlib.sha256(_CANONICAL.encode(described).encode()).hexdigest()[:32]
        return PreparedJob(faces, refs, kps, fingerprint, body)

    async def _prepare_inline(self, job: Job, request: ImageTaskRequest) -> PreparedJob:
        if job.face_images or job.ref_images or job.face_kps_images is not None:
            message = f"job {job.id!r}: a {request.task} job takes no face or reference images"
            raise JobInputError("INVALID_JOB", message)
        try:
            names = request.check_input_names(job.inputs)
        except ValidationError as exc:
            raise JobInputError("INVALID_JOB", f"job {job.id!r}: {exc}") from None
        for name in names:
            if name not in job.inputs:
                raise JobInputError("INVALID_JOB", f"job {job.id!r} has no {name!r} image")
        inputs: list[tuple[str, PreparedImage]] = []
        sizes: dict[str, tuple[int, int]] = {}
        for name in names:
            # Checked here, when the job is prepared: a refused input costs nothing, and the
            # job fails for its own reason before any other is held up by it.
            source, slot = job.inputs[name], request.slot(name)
            try:
                facts = await self._facts(source, slot.limits)
                sizes[name] = check_image(facts, slot.limits)
                if slot.same_size_as is not None and slot.same_size_as in sizes:
                    check_same_size(sizes[name], slot.same_size_as, sizes[slot.same_size_as])
            except ImageProblem as problem:
                named = f"{request.task} input {name!r} {_shown(source)}"
                found = f" is {problem.found}" if problem.found else ""
                message = f"{named}{found}: {problem.allowed}"
                raise JobInputError(problem.reason, message) from None
            inputs.append((name, _prepared(source, facts)))
        # Each input's hash where its base64 will go: the body fingerprints the job as it is.
        body = request.body({name: image.sha256 for name, image in inputs})
        described = {"task": request.task, "body": body}
        fingerprint = hashlib.sha256(_CANONICAL.encode(described).encode()).hexdigest()[:32]
        return PreparedJob((), (), None, fingerprint, body, tuple(inputs))

    async def images(self, sources: tuple[ImageSource, ...]) -> tuple[PreparedImage, ...]:
        """Identify each source by content hash and image type, in order."""
        prepared = []
        for source in sources:
            facts = await self._facts(source)
            if facts.content_type is None:
                raise JobInputError(
                    "INVALID_IMAGE", f"{_shown(source)} is not a PNG, JPEG or WebP image"
                )
            prepared.append(_prepared(source, facts))
        return tuple(prepared)

    async def _facts(self, source: ImageSource, limits: InputLimits | None = None) -> ImageFacts:
        """``source``'s hash, length and header; a file over ``limits``' bytes refused
        (:class:`ImageProblem`) from its stat, unread."""
        if isinstance(source, bytes):
            return image_facts(source)
        return await self._file(os.fspath(source), limits)

    async def _file(self, path: str, limits: InputLimits | None) -> ImageFacts:
        try:
            # The stat stays in the event loop: it tells whether the file must be read at all,
            # and it is quick; reading and hashing, which are not, go to a thread.
            info = check_regular(path)
            if limits is not None:
                check_image_bytes(info.st_size, limits)
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            return await self._files.get(key, lambda: self._hash(path))
        except NotRegularFileError as exc:
            raise _not_a_file(exc) from None
        except FileNotFoundError:
            raise JobInputError("INPUT_NOT_FOUND", f"input file {path!r} does not exist") from None
        except OSError as exc:
            raise _unreadable(path, exc) from None

    async def _hash(self, path: str) -> ImageFacts:
        self.reads += 1
        return await anyio.to_thread.run_sync(hash_file, path)


def _prepared(source: ImageSource, facts: ImageFacts) -> PreparedImage:
    assert facts.content_type is not None  # checked before
    return PreparedImage(source, facts.sha256, facts.content_type, facts.nbytes, facts.size)


def _not_a_file(error: NotRegularFileError) -> JobInputError:
    return JobInputError(
        "INPUT_NOT_A_FILE", f"input {error.path!r} is not a regular file ({error.kind})"
    )


def _unreadable(path: str, error: OSError) -> JobInputError:
    return JobInputError(
        "INPUT_UNREADABLE", f"input file {path!r} cannot be read: {error.strerror or error}"
    )


# Whole-file work, one worker-thread call each (see :mod:`novita_async._files`). Each refuses
# what is not a regular file (JobInputError INPUT_NOT_A_FILE) without opening it.
def hash_file(path: str) -> ImageFacts:
    """The file's SHA-256, read in chunks, its length, and its image type and size from its
    header (None: not one)."""
    with _open(path) as handle:
        return image_file_facts(handle)


def read_file(path: str, size: int = -1) -> bytes:
    """The file's content; given its expected ``size``, no more than one byte past it (enough to
    tell it grew, without reading whatever it grew to)."""
    with _open(path) as handle:
        return handle.read(size + 1 if size >= 0 else -1)


def read_input(image: PreparedImage) -> bytes:
    """``image``'s content, still the one the job was fingerprinted with (else
    ``INPUT_CHANGED``): what is sent must be what the journal names by its hash."""
    if isinstance(image.source, bytes):
        return image.source
    path = os.fspath(image.source)
    try:
        data = read_file(path, image.nbytes)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if len(data) != image.nbytes or hashlib.sha256(data).hexdigest() != image.sha256:
        raise JobInputError("INPUT_CHANGED", f"input file {path!r} changed while in use")
    return data


def _encode(image: PreparedImage) -> str:
    return base64.b64encode(read_input(image)).decode("ascii")


def _open(path: str) -> io.BufferedReader:
    try:
        return open_regular(path)
    except NotRegularFileError as exc:
        raise _not_a_file(exc) from None


def asset_endpoint(assets_url: yarl.URL | str) -> str:
    """The endpoint an asset id belongs to: the asset URL's origin and path, without any user,
    password, query or fragment (nothing secret goes into the journal)."""
    url = yarl.URL(assets_url)
    return str(url.origin().with_path(url.path))


class AssetUploader:
    def __init__(
        self,
        client: NovitaClient,
        journal: Journal,
        *,
        concurrency: int,
        on_request: Callable[[str], None],
    ) -> None:
        self._client = client
        self._journal = journal
        self._endpoint = asset_endpoint(client.config.assets_url)
        self._limit = anyio.CapacityLimiter(concurrency)
        # Nothing is remembered here: the journal remembers every asset uploaded.
        self._uploads: SingleFlight[AssetKey, str] = SingleFlight()
        self._on_request = on_request

    def _key(self, image: PreparedImage) -> AssetKey:
        return (self._endpoint, image.sha256)

    async def asset_id(self, image: PreparedImage) -> tuple[str, bool]:
        """``image``'s asset id, and whether it came from the cache (not uploaded just now, by
        this call or one it waited for)."""
        key = self._key(image)
        if (known := self._journal.assets.get(key)) is not None:
            return known, True
        return await self._uploads.get(key, lambda: self._upload(image)), False

    def replaced(self, cached: Iterable[tuple[PreparedImage, str]]) -> bool:
        """Whether the cache has dropped or replaced any of these ``(image, asset id)`` pairs."""
        assets = self._journal.assets
        return any(assets.get(self._key(image)) != asset_id for image, asset_id in cached)

    def forget(self, image: PreparedImage, asset_id: str) -> None:
        """``asset_id`` of ``image`` may be unknown to the service: upload it again when next
        asked (unless it was uploaded again meanwhile)."""
        self._journal.forget_asset(self._key(image), asset_id)

    async def _upload(self, image: PreparedImage) -> str:
        async with self._limit:
            data = await anyio.to_thread.run_sync(read_input, image)
            self._on_request("upload")
            asset_id = await self._client.upload_asset(data, content_type=image.content_type)
        self._journal.record_asset(self._key(image), asset_id)
        return asset_id


def base64_length(nbytes: int) -> int:
    """The length of ``nbytes`` bytes in base64: what an input is budgeted by."""
    return 4 * ((nbytes + 2) // 3)


class _Content:
    """One input content's base64, by its hash: read by one of the jobs using it, the others
    waiting for that read (and one of them reading in its place if it fails or is cancelled);
    kept while unused until its room in the budget is needed."""

    __slots__ = ("length", "loaded", "loading", "text", "users")

    def __init__(self, length: int) -> None:
        self.length = length
        self.users = 0
        self.text: str | None = None
        self.loading = False
        self.loaded = anyio.Event()

    def __repr__(self) -> str:  # never the text
        return f"<input content: {self.length} bytes of base64, {self.users} users>"


class _Waiter:
    __slots__ = ("admitted", "entered", "needs")

    def __init__(self, needs: Mapping[str, int]) -> None:
        self.needs = needs
        self.admitted = False
        self.entered = anyio.Event()


class InputEncoder:
    """A v3 task's inline inputs, base64-encoded for the time of its submission, within a
    budget of ``max_inline_bytes`` of base64 held at once.

    A job enters when its contents fit beside those in use (first come, first served); a job
    whose contents are larger than the whole budget enters when nothing else is in use, never
    deadlocked. A content used by several jobs at once is read and encoded once, counted once,
    and kept until its last user leaves; then it stays, unused, until its room is needed, so
    jobs sending one content one after the other read it once too. A job cancelled while it
    waits or reads gives back all it held.
    """

    def __init__(self, max_inline_bytes: int | None = None) -> None:
        if max_inline_bytes is None:
            max_inline_bytes = BatchOptions().max_inline_bytes  # the one default
        if max_inline_bytes < 1:
            raise ValueError("max_inline_bytes must be >= 1")
        self.budget = max_inline_bytes
        self._contents: dict[str, _Content] = {}
        self._unused: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._in_use = 0  # base64 bytes of the contents some job uses
        self._held = 0  # and of the unused ones kept
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self.reads = 0
        """Contents read and encoded so far."""
        self.peak = 0
        """The most base64 bytes held (budgeted) at once so far."""

    @property
    def held(self) -> int:
        """Base64 bytes held now: in use, being read, or kept unused."""
        return self._held

    @property
    def in_use(self) -> int:
        """Base64 bytes held now for jobs inside :meth:`encoded`."""
        return self._in_use

    def __repr__(self) -> str:
        return (
            f"InputEncoder(budget={self.budget}, held={self._held}, in_use={self._in_use}, "
            f"contents={len(self._contents)}, waiting={len(self._waiters)})"
        )

    @contextlib.asynccontextmanager
    async def encoded(
        self, inputs: tuple[tuple[str, PreparedImage], ...]
    ) -> AsyncIterator[dict[str, str]]:
        """Each input's base64 by name, for the time of the ``async with``; a file is read again
        and checked against the hash the job was fingerprinted with (``INPUT_CHANGED``)."""
        if not inputs:
            yield {}
            return
        images = {image.sha256: image for _, image in inputs}
        needs = {sha: base64_length(image.nbytes) for sha, image in images.items()}
        await self._enter(needs)
        try:
            texts = {sha: await self._text(sha, image) for sha, image in images.items()}
            yield {name: texts[image.sha256] for name, image in inputs}
        finally:
            self._leave(needs)

    async def _enter(self, needs: Mapping[str, int]) -> None:
        if not self._waiters and self._fits(needs):
            self._take(needs)
            return
        waiter = _Waiter(needs)
        self._waiters.append(waiter)
        try:
            await waiter.entered.wait()
        except BaseException:
            if waiter.admitted:  # let in as it was cancelled: give it all back
                self._leave(needs)
            else:
                self._waiters.remove(waiter)
                self._wake()  # it may have been what held the next one back
            raise

    def _fits(self, needs: Mapping[str, int]) -> bool:
        if not self._in_use:
            return True  # alone, even if larger than the whole budget
        adding = sum(
            length
            for sha, length in needs.items()
            if (content := self._contents.get(sha)) is None or not content.users
        )
        return self._in_use + adding <= self.budget

    def _take(self, needs: Mapping[str, int]) -> None:
        for sha, length in needs.items():
            if (content := self._contents.get(sha)) is None:
                content = self._contents[sha] = _Content(length)
                self._held += length
            if not content.users:
                self._unused.pop(sha, None)
                self._in_use += content.length
            content.users += 1
        self._drop_unused()
        self.peak = max(self.peak, self._held)

    def _leave(self, needs: Mapping[str, int]) -> None:
        # Synchronous: a cancelled job cannot be stopped half way through giving back.
        for sha in needs:
            content = self._contents[sha]
            content.users -= 1
            if content.users:
                continue
            self._in_use -= content.length
            if content.text is None:  # never read (failed, or cancelled): nothing to keep
                del self._contents[sha]
                self._held -= content.length
            else:
                self._unused[sha] = None
        self._drop_unused()
        self._wake()

    def _drop_unused(self) -> None:
        """Drop unused contents, least recently used first, until those held fit the budget."""
        while self._held > self.budget and self._unused:
            sha, _ = self._unused.popitem(last=False)
            self._held -= self._contents.pop(sha).length

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0].needs):
            waiter = self._waiters.popleft()
            self._take(waiter.needs)
            waiter.admitted = True
            waiter.entered.set()

    async def _text(self, sha: str, image: PreparedImage) -> str:
        content = self._contents[sha]
        while content.text is None:
            if content.loading:
                await content.loaded.wait()
                continue  # read, or its reader failed: then this job reads it
            content.loading = True
            try:
                content.text = await anyio.to_thread.run_sync(_encode, image)
            finally:
                content.loading = False
                loaded, content.loaded = content.loaded, anyio.Event()
                loaded.set()
            self.reads += 1
            logger.debug(
                "input %s (%d bytes) read and encoded for %d job(s)",
                sha[:16],
                image.nbytes,
                content.users,
            )
        return content.text
