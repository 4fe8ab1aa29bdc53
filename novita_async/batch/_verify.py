# Shim (issue 22): these names live in _run_folder now; removed in Phase B.
from ._run_folder import (
    OUTPUT_LOST,
    OUTPUT_MISSING,
    FileProblem,
    OutputLostError,
    OutputMissingError,
    Problem,
    local_problems,
    output_errors,
    stored_problems,
)

__all__ = [
    "OUTPUT_LOST",
    "OUTPUT_MISSING",
    "FileProblem",
    "OutputLostError",
    "OutputMissingError",
    "Problem",
    "local_problems",
    "output_errors",
    "stored_problems",
]
