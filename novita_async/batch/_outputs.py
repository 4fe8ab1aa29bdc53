"""The files a run writes in its output folder, and the checks that keep them apart from inputs.

OUT holds ``<job id>_<n>.<ext>`` images (and, while one is written, its temporary name from
:func:`novita_async._atomic.temp_path_for`), ``results.jsonl``, ``index.html``, the journal
``.novita-journal.jsonl`` with its reserve, and the lock ``.novita-lock`` that makes one run per
output folder whatever the journal's path. A run never writes over its inputs, and never pays for
a job whose file names the output file system cannot hold.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._exceptions import LocalIOError
from ._job import ImageSource, Job, JobInputError
from ._locks import lock_or_refuse
from ._results import RESULTS_NAME

__all__ = [
    "GALLERY_NAME",
    "LOCK_NAME",
    "RESULTS_NAME",
    "OutputLock",
    "check_output_names",
    "is_run_output",
    "longest_name",
]

GALLERY_NAME = "index.html"
LOCK_NAME = ".novita-lock"
# An image the runner names: <job id>_<n>.<ext>.
_IMAGE_NAME = re.compile(r".+_\d+\.(png|jpeg|jpg|webp)", re.IGNORECASE)
# The temporary name's additions: ".<name>.<pid>-<counter>.part", at their longest.
_TEMP_OVERHEAD = len(".") + len(".") + 7 + len("-") + 20 + len(".part")


def is_run_output(path: ImageSource | str | os.PathLike[str], out_dir: Path) -> bool:
    """Whether ``path`` is a file a run in ``out_dir`` writes (or may write)."""
    if isinstance(path, bytes) or not _named_like_output(os.path.basename(path)):
        return False  # (a link named otherwise pointing at an output is left alone)
    try:
        resolved = Path(path).resolve()
        out = out_dir.resolve()
    except OSError:
        return False
    return resolved.parent == out and _named_like_output(resolved.name)


def _named_like_output(name: str) -> bool:
    return (
        name in (RESULTS_NAME, GALLERY_NAME)
        or name.startswith(".novita")
        or name.endswith(".part")
        or _IMAGE_NAME.fullmatch(name) is not None
    )


def longest_name(job: Job) -> str:
    """The longest file name the run creates for ``job``, its temporary name included."""
    extension = max(job.request.image_type, "jpeg", key=len)
    return f"{job.id}_{job.request.image_num - 1}.{extension}"


def check_output_names(job: Job, name_max: int) -> None:
    """:class:`JobInputError` unless every name the run creates for ``job`` fits in ``name_max``
    bytes (the output file system's limit, counted in bytes of UTF-8, not characters)."""
    name = longest_name(job)
    size = len(name.encode("utf-8", "surrogatepass")) + _TEMP_OVERHEAD
    if size > name_max:
        raise JobInputError(
            "NAME_TOO_LONG",
            f"job id {job.id!r} makes file names of up to {size} bytes (temporary names "
            f"included); the output folder's file system allows {name_max}: use a shorter id",
        )


class OutputLock:
    """The lock that makes one run per output folder, whatever each run's journal path.

    Held (``flock``) on ``OUT/.novita-lock`` from :meth:`acquire` to :meth:`release`; the
    operating system releases it if the process dies.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            path = str(self.path)
            raise LocalIOError.from_os_error(exc, "locking the output folder", path) from exc
        try:
            lock_or_refuse(
                fd, f"{self.path.parent} is in use by another run; one run per output folder"
            )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
