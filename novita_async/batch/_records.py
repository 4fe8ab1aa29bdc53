# Shim (issue 22): these names live in _journal now; removed in Phase B.
from ._journal import (
    AssetRecord,
    FailedRecord,
    JournalDamagedError,
    JournalRecord,
    JournalScan,
    NotSubmittedRecord,
    SubmittedRecord,
    SubmittingRecord,
    SucceededRecord,
    decode_record,
    encode_record,
    read_records,
    scan_journal,
)

__all__ = [
    "AssetRecord",
    "FailedRecord",
    "JournalDamagedError",
    "JournalRecord",
    "JournalScan",
    "NotSubmittedRecord",
    "SubmittedRecord",
    "SubmittingRecord",
    "SucceededRecord",
    "decode_record",
    "encode_record",
    "read_records",
    "scan_journal",
]
