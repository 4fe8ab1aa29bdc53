from ._completion import (
    TRANSIENT_ERRORS,
    PollPolicy,
    PollTracker,
    ProgressHook,
    wait_until_done,
)

__all__ = ["TRANSIENT_ERRORS", "PollPolicy", "PollTracker", "ProgressHook", "wait_until_done"]
