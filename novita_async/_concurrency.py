# Shim (re-exports only), removed in Phase B.
from ._client import map_limited

__all__ = ["map_limited"]
