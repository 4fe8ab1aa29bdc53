"""Advisory file locks (``flock``): one run per output folder, and no repair under a run.

The operating system releases a lock when its descriptor is closed or its process dies, so a
killed run never leaves its folder locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._exceptions import ConfigurationError

try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is refused
    fcntl = None  # type: ignore[assignment]

__all__ = ["is_locked", "lock_or_refuse"]


def lock_or_refuse(fd: int, in_use: str) -> None:
    """Lock ``fd`` exclusively now, or raise :class:`ConfigurationError` saying ``in_use``."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigurationError(in_use) from None


def is_locked(path: Path) -> bool:
    """Whether a run holds ``path`` locked (a shared lock is refused while it does; ours, if
    granted, goes with the descriptor at once). A missing file is not locked."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
