from .._exceptions import OutageError
from ._pacing import PauseHook, RatePermits, RunGate, RunStopped, SubmitPermits, logger  # noqa: F401  (shim, removed in Phase B)

__all__ = ["OutageError", "RatePermits", "RunGate", "RunStopped", "SubmitPermits"]
