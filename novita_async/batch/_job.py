"""What the batch runner is given (:class:`Job`, :class:`InvalidJob`) and gives back.

A job is deliberately loose at construction: its id and image sources are checked by the runner,
so one bad job in a stream of thousands becomes one failed outcome instead of an exception in the
caller's generator. Only types are checked here. An input that could not even be described as a
job (a job-file line that does not parse) is an :class:`InvalidJob`: the runner records it as
failed with its own reason, so that every input has its result line. Each input ends as a
:class:`JobOutcome`.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable
from typing import Any, TypeAlias

import attrs

from .._exceptions import NovitaError
from .._models import InstantIDRequest

__all__ = [
    "ImageSource",
    "InvalidJob",
    "Job",
    "JobError",
    "JobInputError",
    "JobOutcome",
    "JobStatus",
    "check_job_id",
]

ImageSource: TypeAlias = str | os.PathLike[str] | bytes
"""A file path or the image's bytes."""


class JobStatus(enum.StrEnum):
    """How a job ended; its value is what ``results.jsonl`` says."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Names the runner itself writes in OUT; a job id may not be one of them.
RESERVED_NAMES = frozenset({"results.jsonl"})
MAX_JOB_ID_LENGTH = 200
# C0, DEL and C1 (\x9b is a terminal's CSI as \x1b[ is): none belongs in a file name.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


def _sources(value: Iterable[ImageSource] | ImageSource) -> tuple[ImageSource, ...]:
    # A single path or bytes object is one image, not a sequence of characters.
    if isinstance(value, str | bytes | os.PathLike):
        return (value,)
    return tuple(value)


def _optional_sources(
    value: Iterable[ImageSource] | ImageSource | None,
) -> tuple[ImageSource, ...] | None:
    return None if value is None else _sources(value)


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_sources(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    for item in value:  # type: ignore[attr-defined]
        if not isinstance(item, str | bytes | os.PathLike):
            raise TypeError(f"Job.{attribute.name} items must be paths or bytes, not {item!r}")


def _short_repr(sources: tuple[ImageSource, ...] | None) -> str:
    if sources is None:
        return "None"
    shown = [f"<{len(s)} bytes>" if isinstance(s, bytes) else repr(os.fspath(s)) for s in sources]
    return "[" + ", ".join(shown) + "]"


@attrs.frozen(repr=False)
class Job:
    """One generation: the faces and references to upload, and the request to send.

    ``request`` is a template: the runner fills its ``face_image_assets_ids``,
    ``ref_image_assets_ids`` and ``face_kps_assets_ids`` after uploading the images.
    """

    id: str = attrs.field(validator=attrs.validators.instance_of(str))
    face_images: tuple[ImageSource, ...] = attrs.field(converter=_sources, validator=_check_sources)
    ref_images: tuple[ImageSource, ...] = attrs.field(converter=_sources, validator=_check_sources)
    request: InstantIDRequest = attrs.field(
        validator=attrs.validators.instance_of(InstantIDRequest)
    )
    face_kps_images: tuple[ImageSource, ...] | None = attrs.field(
        default=None, converter=_optional_sources, validator=_check_sources
    )

    def __repr__(self) -> str:
        # Image bytes would flood a log line; show their size instead.
        return (
            f"Job(id={self.id!r}, face_images={_short_repr(self.face_images)}, "
            f"ref_images={_short_repr(self.ref_images)}, "
            f"face_kps_images={_short_repr(self.face_kps_images)}, request={self.request!r})"
        )


@attrs.frozen
class InvalidJob:
    """An input that cannot become a :class:`Job` (e.g. a job-file line that does not parse).

    :meth:`BatchRunner.run` takes it alongside jobs and ends it as a failed outcome with
    ``error``'s reason, recorded in the journal and ``results.jsonl`` like any failed job.
    """

    id: str = attrs.field(validator=attrs.validators.instance_of(str))
    error: NovitaError = attrs.field(validator=attrs.validators.instance_of(NovitaError))


JobInput: TypeAlias = "Job | InvalidJob"
"""What :meth:`BatchRunner.run` reads from its input."""


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
    """

    job_id: str
    status: JobStatus = attrs.field(converter=JobStatus)
    task_id: str | None = None
    seed: int | None = None
    files: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    error: JobError | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.SUCCEEDED
