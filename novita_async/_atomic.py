"""Files that appear whole or not at all: written under a temporary name, then renamed.

How this package does file I/O, in one place:

- Async code that writes a file piece by piece as the data arrives (an image download) uses one
  library, ``aiofiles``, as the design names it (:mod:`novita_async._download`).
- A whole-file job that is one function (write a file atomically, hash or read an input) is plain
  synchronous code, ``open`` and :func:`os.replace`, run in a worker thread by its async caller
  (``anyio.to_thread.run_sync``): a cancelled caller waits for the thread, so no handle is left
  open half-way. :func:`write_atomically` is that code for writing.
- The journal and ``results.jsonl`` append each record synchronously with :func:`write_all`, on
  purpose: a record is written in the same step as the answer it records, with no ``await``
  between (see :mod:`novita_async.batch._journal`).

A temporary name carries the writer's process id, so that :func:`remove_stale_temp_files` can
tell the leftovers of a killed process from the files of a run still writing.

An ``OSError`` from writing a file is this machine's problem (a full disk, a read-only file
system, a name too long), never the network's: the writers here, and the download's file
operations through :func:`local_io`, raise it as :class:`~._exceptions.LocalIOError`, which no
retry loop repeats and whose ``reason`` names the problem (``DISK_FULL``...).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterable, Iterator

from ._exceptions import LocalIOError

__all__ = [
    "local_io",
    "remove_stale_temp_files",
    "temp_path_for",
    "write_all",
    "write_atomically",
]

_temp_names = itertools.count()
_TEMP_NAME = re.compile(r"\..+\.(\d+)-\d+\.part")


@contextlib.contextmanager
def local_io(doing: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise an ``OSError`` of the block as :class:`LocalIOError` ("``doing`` failed: ...")."""
    try:
        yield
    except OSError as exc:
        raise LocalIOError.from_os_error(exc, doing, os.fspath(path)) from exc


def temp_path_for(dest: str | os.PathLike[str]) -> str:
    """A fresh hidden name next to ``dest``, so the final rename stays on one file system."""
    folder, name = os.path.split(os.fspath(dest))
    return os.path.join(folder, f".{name}.{os.getpid()}-{next(_temp_names)}.part")


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files (see :func:`temp_path_for`) that processes which no longer
    exist left in ``folder`` (a ``kill -9`` mid-download); returns how many were removed.

    A file whose writer is alive (this process included) is left alone, even if it shares the
    folder with another run.
    """
    removed = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            if match is None or _alive(int(match[1])) or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would end the process there, not probe it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True


def write_atomically(
    dest: str | os.PathLike[str], chunks: Iterable[bytes | bytearray], *, fsync: bool = True
) -> None:
    """Write ``chunks`` to ``dest`` via a temporary file and :func:`os.replace`.

    The file gets the permissions any new file would (0666 less the umask), not the 0600 of
    :func:`tempfile.mkstemp`. On any failure the temporary file is removed and ``dest`` is left
    as it was; an ``OSError`` is raised as :class:`LocalIOError`. Blocking: call it from a worker
    thread in async code.
    """
    tmp = temp_path_for(dest)
    try:
        with local_io(f"writing {os.path.basename(dest)}", dest):
            with open(tmp, "xb") as out:
                out.writelines(chunks)
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_all(
    fd: int, data: bytes | bytearray, *, path: str | os.PathLike[str] | None = None
) -> None:
    """Append all of ``data`` to ``fd`` (``os.write`` may take only part), or none of it.

    ``fd`` is an ``O_APPEND`` descriptor that only this process writes to (the journal, the
    results file). If the file system refuses the rest of ``data`` (the disk fills up half-way
    through a record), the part already written is cut off again, so that the next record does
    not join a torn one, and the error is raised as :class:`LocalIOError`; ``path`` names the
    file in its message.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if written := len(data) - len(view):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
        if path is None:
            raise LocalIOError.from_os_error(exc, "appending a record", f"descriptor {fd}") from exc
        shown = os.fspath(path)
        raise LocalIOError.from_os_error(exc, f"writing {os.path.basename(shown)}", shown) from exc
