"""Files that appear whole or not at all: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable

__all__ = ["remove_stale_temp_files", "temp_path_for", "write_atomically"]

_temp_names = itertools.count()


def temp_path_for(dest: str | os.PathLike[str]) -> str:
    """A fresh hidden name next to ``dest``, so the final rename stays on one file system."""
    # String work rather than pathlib: this runs for every image a batch writes.
    folder, name = os.path.split(os.fspath(dest))
    return os.path.join(folder, f".{name}.{os.getpid()}-{next(_temp_names)}.part")


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files (see :func:`temp_path_for`) a killed process left in ``folder``.

    Only for a folder no other process is writing to (the batch runner holds its journal's lock).
    Returns how many were removed.
    """
    removed = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".part") and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed += 1
    return removed


def write_atomically(
    dest: str | os.PathLike[str], chunks: Iterable[bytes | bytearray], *, fsync: bool = True
) -> None:
    """Write ``chunks`` to ``dest`` via a temporary file and :func:`os.replace`.

    The file gets the permissions any new file would (0666 less the umask), not the 0600 of
    :func:`tempfile.mkstemp`. On any failure the temporary file is removed and ``dest`` is left
    as it was.
    """
    tmp = temp_path_for(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
