from ._failures import FailureKind, RetryPolicy, is_retryable_status, parse_retry_after  # noqa: F401  (shim, removed in Phase B)
from ._failures import attempt_may_repeat as should_retry

__all__ = ["FailureKind", "RetryPolicy", "parse_retry_after", "should_retry"]
