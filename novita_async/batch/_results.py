# Shim (issue 22): these names live in _journal now; removed in Phase B.
from ._journal import RESULTS_NAME, ResultLine, ResultsFile

__all__ = ["RESULTS_NAME", "ResultLine", "ResultsFile"]
