# Shim (issue 22): these names live in _journal now; removed in Phase B.
from ._journal import RepairReport, repair_journal

__all__ = ["RepairReport", "repair_journal"]
