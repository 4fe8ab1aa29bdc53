# Shim (re-exports only), removed in Phase B.
from ._client import MODELS_PATH

__all__ = ["MODELS_PATH"]
