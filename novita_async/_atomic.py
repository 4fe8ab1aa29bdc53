"""Files that appear whole or not at all: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["temp_path_for", "write_atomically"]

_temp_names = itertools.count()


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden name next to ``dest``, so the final rename stays on one file system."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{next(_temp_names)}.part")


def write_atomically(
    dest: Path, chunks: Iterable[bytes | bytearray], *, fsync: bool = True
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
