"""Reading a job's input images: content hash, image type, and the job's fingerprint.

Files are read in chunks in a worker thread and hashed, never held whole; a file seen before with
the same size and modification time is not read again (a small LRU cache), so a face shared by a
thousand jobs is hashed once. The fingerprint (a hash of the request template and of every input's
content) lets a rerun tell "the same job" from "a different job under the same id".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Any

import anyio
import attrs

from .._converter import unstructure_request
from .._sources import sniff_content_type
from ._job import ImageSource, Job, JobInputError

__all__ = ["InputReader", "PreparedImage", "PreparedJob", "hash_file", "read_file"]

_CHUNK = 1 << 20


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
    """The request's JSON body without the asset ids, which the runner fills in after upload."""

    def all_images(self) -> tuple[PreparedImage, ...]:
        return self.faces + self.refs + (self.kps or ())


def _describe(source: ImageSource) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else repr(os.fspath(source))


class InputReader:
    def __init__(self, cache_size: int = 4096) -> None:
        self._cache: OrderedDict[tuple[int, int, int, int], tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size
        # Files being hashed now: the many jobs that start together with the same face wait for
        # one read instead of each reading it.
        self._hashing: dict[tuple[int, int, int, int], anyio.Event] = {}

    async def prepare(self, job: Job) -> PreparedJob:
        """Hash and type-check every input of ``job``; :class:`JobInputError` if one is bad."""
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
        sources = (*job.face_images, *job.ref_images, *(job.face_kps_images or ()))
        images = await self.images(sources)
        n_faces, n_refs = len(job.face_images), len(job.ref_images)
        faces, refs = images[:n_faces], images[n_faces : n_faces + n_refs]
        kps = None if job.face_kps_images is None else images[n_faces + n_refs :]
        body = unstructure_request(job.request)
        for filled_by_the_runner in ASSET_FIELDS:
            body.pop(filled_by_the_runner, None)
        return PreparedJob(faces, refs, kps, fingerprint(body, faces, refs, kps), body)

    async def images(self, sources: tuple[ImageSource, ...]) -> tuple[PreparedImage, ...]:
        """Identify each source by content hash and image type, in order."""
        paths = [os.fspath(s) for s in sources if not isinstance(s, bytes)]
        # A stat of a local file takes microseconds; a worker-thread hop to make it costs more
        # than that in the event loop itself, once per job of a batch that names the same files
        # over and over. Reading and hashing (cached by the stat) do go to a thread.
        stats = iter(_stat_all(paths))
        prepared = []
        for source in sources:
            if isinstance(source, bytes):
                sha = hashlib.sha256(source).hexdigest()
                content_type = sniff_content_type(source[:16])
            else:
                sha, content_type = await self._file(os.fspath(source), next(stats))
            if content_type is None:
                raise JobInputError(
                    "INVALID_IMAGE", f"{_describe(source)} is not a PNG, JPEG or WebP image"
                )
            prepared.append(PreparedImage(source, sha, content_type))
        return tuple(prepared)

    async def _file(self, path: str, info: os.stat_result | OSError) -> tuple[str, str | None]:
        try:
            if isinstance(info, OSError):
                raise info
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if (hit := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                return hit
            while (hashing := self._hashing.get(key)) is not None:
                await hashing.wait()
                if (hit := self._cache.get(key)) is not None:
                    return hit
            self._hashing[key] = hashing = anyio.Event()
            try:
                sha, head = await anyio.to_thread.run_sync(hash_file, path)
            finally:
                del self._hashing[key]
                hashing.set()
        except FileNotFoundError:
            raise JobInputError("INPUT_NOT_FOUND", f"input file {path!r} does not exist") from None
        except OSError as exc:
            raise JobInputError(
                "INPUT_UNREADABLE", f"input file {path!r} cannot be read: {exc.strerror or exc}"
            ) from None
        content_type = sniff_content_type(head)
        if content_type is not None:
            self._cache[key] = (sha, content_type)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return sha, content_type


def _stat_all(paths: list[str]) -> list[os.stat_result | OSError]:
    results: list[os.stat_result | OSError] = []
    for path in paths:
        try:
            results.append(os.stat(path))
        except OSError as exc:
            results.append(exc)
    return results


# The file work runs in one worker thread per call, opened and closed there: a cancelled caller
# waits for the thread (anyio's default), so no file handle is ever left open, which an
# ``await``-ed ``aiofiles.open`` cannot promise when cancelled mid-open.
def hash_file(path: str) -> tuple[str, bytes]:
    """The SHA-256 of the file's content and its first bytes, read in chunks."""
    digest = hashlib.sha256()
    head = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if not head:
                head = chunk[:16]
            digest.update(chunk)
    return digest.hexdigest(), head


def read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


# Built once (json.dumps builds an encoder per call); sorted keys make the text canonical.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=list)

ASSET_FIELDS = ("face_image_assets_ids", "ref_image_assets_ids", "face_kps_assets_ids")


def fingerprint(
    body: dict[str, Any],
    faces: tuple[PreparedImage, ...],
    refs: tuple[PreparedImage, ...],
    kps: tuple[PreparedImage, ...] | None,
) -> str:
    """A hash of the request body (asset ids left out) and of every input's content."""
    described = {
        "request": body,
        "face_images": [i.sha256 for i in faces],
        "ref_images": [i.sha256 for i in refs],
        "face_kps_images": None if kps is None else [i.sha256 for i in kps],
    }
    canonical = _CANONICAL.encode(described)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
