"""Reading a job's input images: content hash, image type, and the job's fingerprint.

Files are read in chunks in a worker thread and hashed, never held whole; a file seen before with
the same size and modification time is not read again (a small LRU cache, shared by the jobs that
ask at the same moment: :mod:`novita_async._singleflight`), so a face shared by a thousand jobs is
hashed once. An input that is not a regular file (a FIFO, a directory, a device) is refused before
it is opened, with ``INPUT_NOT_A_FILE``: opening a FIFO would block the run (see
:mod:`novita_async._sources`). The fingerprint (a hash of the request template and of every
input's content) lets a rerun tell "the same job" from "a different job under the same id".
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, BinaryIO

import anyio
import attrs

from .._converter import unstructure_request
from .._singleflight import SingleFlight
from .._sources import NotRegularFileError, check_regular, open_regular, sniff_content_type
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


_StatKey = tuple[int, int, int, int]


class InputReader:
    def __init__(self, cache_size: int = 4096) -> None:
        # Keyed by what a stat says of the file: the many jobs that start together with the same
        # face wait for one read instead of each reading it, and later jobs read nothing.
        self._files: SingleFlight[_StatKey, tuple[str, str | None]] = SingleFlight(cache_size)

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
        prepared = []
        for source in sources:
            if isinstance(source, bytes):
                sha = hashlib.sha256(source).hexdigest()
                content_type = sniff_content_type(source[:16])
            else:
                sha, content_type = await self._file(os.fspath(source))
            if content_type is None:
                raise JobInputError(
                    "INVALID_IMAGE", f"{_describe(source)} is not a PNG, JPEG or WebP image"
                )
            prepared.append(PreparedImage(source, sha, content_type))
        return tuple(prepared)

    async def _file(self, path: str) -> tuple[str, str | None]:
        try:
            # The stat stays in the event loop: it is what tells whether the file must be read
            # at all, and it is quick; reading and hashing, which are not, go to a thread.
            info = check_regular(path)
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            return await self._files.get(key, lambda: anyio.to_thread.run_sync(_identify, path))
        except NotRegularFileError as exc:
            raise _not_a_file(exc) from None
        except FileNotFoundError:
            raise JobInputError("INPUT_NOT_FOUND", f"input file {path!r} does not exist") from None
        except OSError as exc:
            raise JobInputError(
                "INPUT_UNREADABLE", f"input file {path!r} cannot be read: {exc.strerror or exc}"
            ) from None


def _not_a_file(error: NotRegularFileError) -> JobInputError:
    return JobInputError(
        "INPUT_NOT_A_FILE", f"input {error.path!r} is not a regular file ({error.kind})"
    )


def _identify(path: str) -> tuple[str, str | None]:
    sha, head = hash_file(path)
    return sha, sniff_content_type(head)


# Whole-file work, run in one worker thread per call (see :mod:`novita_async._atomic`): a
# cancelled caller waits for the thread, so no file handle is ever left open.
# Both refuse what is not a regular file (JobInputError INPUT_NOT_A_FILE) without opening it.
def hash_file(path: str) -> tuple[str, bytes]:
    """The SHA-256 of the file's content and its first bytes, read in chunks."""
    digest = hashlib.sha256()
    head = b""
    with _open(path) as handle:
        while chunk := handle.read(_CHUNK):
            if not head:
                head = chunk[:16]
            digest.update(chunk)
    return digest.hexdigest(), head


def read_file(path: str) -> bytes:
    with _open(path) as handle:
        return handle.read()


def _open(path: str) -> BinaryIO:
    try:
        return open_regular(path)
    except NotRegularFileError as exc:
        raise _not_a_file(exc) from None


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
