# Shim (re-exports only), removed in Phase B.
from ._http import BUFFER_LIMIT, CHUNK_SIZE, INLINE_LIMIT, is_expired_answer

__all__ = ["BUFFER_LIMIT", "CHUNK_SIZE", "INLINE_LIMIT", "is_expired_answer"]
