# Shim (issue 22): these names live in _run_folder now; removed in Phase B.
from ._run_folder import RunStatus, read_status

__all__ = ["RunStatus", "read_status"]
