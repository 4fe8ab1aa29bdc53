# Shim (re-exports only), removed in Phase B.
from ._http import Renewal, image_extension

__all__ = ["Renewal", "image_extension"]
