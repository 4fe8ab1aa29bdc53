from ._plan import DryRun, JobProblem, dry_run  # (shim, removed in Phase B)

__all__ = ["DryRun", "JobProblem", "dry_run"]
