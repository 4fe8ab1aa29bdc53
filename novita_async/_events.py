# Shim (re-exports only), removed in Phase B.
from ._http import ClientEvent, EventHook, EventKind

__all__ = ["ClientEvent", "EventHook", "EventKind"]
