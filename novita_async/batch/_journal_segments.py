# Shim (issue 22): these names live in _journal now; removed in Phase B.
from ._journal import (
    JOURNAL_FLUSH_SECONDS,
    JOURNAL_KEY,
    JournalMirror,
    JournalsDisagreeError,
    segment_key,
)

__all__ = [
    "JOURNAL_FLUSH_SECONDS",
    "JOURNAL_KEY",
    "JournalMirror",
    "JournalsDisagreeError",
    "segment_key",
]
