"""Shim: the names of this module moved (removed in Phase B)."""

from ._files import local_io, remove_stale_temp_files, temp_path_for, write_all, write_atomically

__all__ = ["local_io", "remove_stale_temp_files", "temp_path_for", "write_all", "write_atomically"]
