"""A job's inputs: read, checked, hashed, fingerprinted, and uploaded once per asset endpoint.

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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import attrs
import yarl

from .._client import NovitaClient
from .._converter import unstructure_request
from .._files import NotRegularFileError, check_regular, open_regular, sniff_content_type
from .._models import ImageTaskRequest
from .._singleflight import SingleFlight
from ._jobs import ImageSource, Job, JobInputError
from ._journal import AssetKey, Journal

__all__ = [
    "AssetUploader", "InputEncoder", "InputReader", "PreparedImage", "PreparedJob",
    "asset_endpoint",
]  # fmt: skip


@attrs.frozen
class PreparedImage:
    source: ImageSource
    sha256: str
    content_type: str


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
        self._files: SingleFlight[_StatKey, tuple[str, str | None]] = SingleFlight(cache_size)

    async def prepare(self, job: Job) -> PreparedJob:
        """Hash and type-check every input of ``job``; :class:`JobInputError` if one is bad."""
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
        names = request.input_names()
        for name in job.inputs:
            if name not in names:
                message = f"job {job.id!r}: this {request.task} request has no input {name!r}"
                raise JobInputError("INVALID_JOB", message)
        for name in names:
            if name not in job.inputs:
                raise JobInputError("INVALID_JOB", f"job {job.id!r} has no {name!r} image")
        images = await self.images(tuple(job.inputs[name] for name in names))
        inputs = tuple(zip(names, images, strict=True))
        # Each input's hash where its base64 will go: the body fingerprints the job as it is.
        body = request.body({name: image.sha256 for name, image in inputs})
        described = {"task": request.task, "body": body}
        fingerprint = hashlib.sha256(_CANONICAL.encode(described).encode()).hexdigest()[:32]
        return PreparedJob((), (), None, fingerprint, body, inputs)

    async def images(self, sources: tuple[ImageSource, ...]) -> tuple[PreparedImage, ...]:
        """Identify each source by content hash and image type, in order."""
        prepared = []
        for source in sources:
            if isinstance(source, bytes):
                sha, content_type = hashlib.sha256(source).hexdigest(), sniff_content_type(source)
                shown = f"<{len(source)} bytes>"
            else:
                sha, content_type = await self._file(os.fspath(source))
                shown = repr(os.fspath(source))
            if content_type is None:
                raise JobInputError("INVALID_IMAGE", f"{shown} is not a PNG, JPEG or WebP image")
            prepared.append(PreparedImage(source, sha, content_type))
        return tuple(prepared)

    async def _file(self, path: str) -> tuple[str, str | None]:
        try:
            # The stat stays in the event loop: it tells whether the file must be read at all,
            # and it is quick; reading and hashing, which are not, go to a thread.
            info = check_regular(path)
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            return await self._files.get(key, lambda: anyio.to_thread.run_sync(hash_file, path))
        except NotRegularFileError as exc:
            raise _not_a_file(exc) from None
        except FileNotFoundError:
            raise JobInputError("INPUT_NOT_FOUND", f"input file {path!r} does not exist") from None
        except OSError as exc:
            raise _unreadable(path, exc) from None


def _not_a_file(error: NotRegularFileError) -> JobInputError:
    return JobInputError(
        "INPUT_NOT_A_FILE", f"input {error.path!r} is not a regular file ({error.kind})"
    )


def _unreadable(path: str, error: OSError) -> JobInputError:
    return JobInputError(
        "INPUT_UNREADABLE", f"input file {path!r} cannot be read: {error.strerror or error}"
    )


# Whole-file work, one worker-thread call each (see :mod:`novita_async._files`). Both refuse
# what is not a regular file (JobInputError INPUT_NOT_A_FILE) without opening it.
def hash_file(path: str) -> tuple[str, str | None]:
    """The SHA-256 of the file's content, read in chunks, and its image type (None: not one)."""
    with _open(path) as handle:
        head = handle.read(16)
        handle.seek(0)
        return hashlib.file_digest(handle, "sha256").hexdigest(), sniff_content_type(head)


def read_file(path: str) -> bytes:
    with _open(path) as handle:
        return handle.read()


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
            data = image.source
            if not isinstance(data, bytes):
                path = os.fspath(data)
                try:
                    data = await anyio.to_thread.run_sync(read_file, path)
                except OSError as exc:
                    raise _unreadable(path, exc) from None
                # The bytes sent must be the bytes the journal will name by their hash.
                if hashlib.sha256(data).hexdigest() != image.sha256:
                    message = f"input file {path!r} changed while in use"
                    raise JobInputError("INPUT_CHANGED", message)
            self._on_request("upload")
            asset_id = await self._client.upload_asset(data, content_type=image.content_type)
        self._journal.record_asset(self._key(image), asset_id)
        return asset_id


class InputEncoder:
    """A v3 task's inline inputs, base64-encoded for the time of its submission only."""

    @contextlib.asynccontextmanager
    async def encoded(
        self, inputs: tuple[tuple[str, PreparedImage], ...]
    ) -> AsyncIterator[dict[str, str]]:
        """Each input's base64 by name, for the time of the ``async with``; read again and
        checked against the hash the job was fingerprinted with."""
        encoded: dict[str, str] = {}
        for name, image in inputs:
            data = image.source
            if not isinstance(data, bytes):
                path = os.fspath(data)
                try:
                    data = await anyio.to_thread.run_sync(read_file, path)
                except OSError as exc:
                    raise _unreadable(path, exc) from None
                if hashlib.sha256(data).hexdigest() != image.sha256:
                    message = f"input file {path!r} changed while in use"
                    raise JobInputError("INPUT_CHANGED", message)
            encoded[name] = base64.b64encode(data).decode("ascii")
        yield encoded
