"""Files that appear whole or not at all: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterable

__all__ = ["remove_stale_temp_files", "temp_path_for", "write_all", "write_atomically"]

_temp_names = itertools.count()
# Written in blocks of this size: a results file of many short lines is a few writes, not one each.
_BLOCK = 1 << 20
# os.getpid() is a system call each time; the pid only changes in a forked child.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere a process does not fork
    os.register_at_fork(after_in_child=_forked)
# O_CLOEXEC: not inherited by child processes; O_BINARY: no newline translation on Windows.
_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def temp_path_for(dest: str | os.PathLike[str]) -> str:
    """A fresh hidden name next to ``dest``, so the final rename stays on one file system."""
    # String work rather than pathlib: this runs for every image a batch writes.
    folder, name = os.path.split(os.fspath(dest))
    return os.path.join(folder, f".{name}.{_pid}-{next(_temp_names)}.part")


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


_TEMP_NAME = re.compile(r"\..+\.(\d+)-\d+\.part")


def _alive(pid: int) -> bool:
    if pid == _pid:
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
    as it was.
    """
    tmp = temp_path_for(dest)
    # A bare descriptor, not a Python file object: opening one costs three more system calls
    # (fstat, ioctl, lseek), once per image of a batch.
    fd = os.open(tmp, _FLAGS, 0o666)
    try:
        try:
            pending = bytearray()
            for chunk in chunks:
                if not pending and len(chunk) >= _BLOCK:
                    write_all(fd, chunk)
                    continue
                pending += chunk
                if len(pending) >= _BLOCK:
                    write_all(fd, pending)
                    pending.clear()
            write_all(fd, pending)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (``os.write`` may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
