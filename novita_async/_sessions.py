# Shim (re-exports only), removed in Phase B.
from ._http import Sessions

__all__ = ["Sessions"]
