"""Shim: the names of this module moved (removed in Phase B)."""

from .._files import is_locked, lock_or_refuse

__all__ = ["is_locked", "lock_or_refuse"]
