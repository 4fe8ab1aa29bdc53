from ._events import BatchSummary, SummaryCounter  # (shim, removed in Phase B)

__all__ = ["BatchSummary", "SummaryCounter"]
