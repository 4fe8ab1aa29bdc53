# Shim (re-exports only), removed in Phase B.
from ._http import NETWORK_ERRORS, AttemptFailed, Transport, connection_failure, error_from_answer

__all__ = [
    "NETWORK_ERRORS",
    "AttemptFailed",
    "Transport",
    "connection_failure",
    "error_from_answer",
]
