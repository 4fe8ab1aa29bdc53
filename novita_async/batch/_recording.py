from ._events import Recorder, failed_outcome  # (shim, removed in Phase B)

__all__ = ["Recorder", "failed_outcome"]
