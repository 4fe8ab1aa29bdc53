from ._completion import (
    PollPolicy,
    PollTracker,
    ProgressHook,
    wait_until_done,
)

__all__ = ["PollPolicy", "PollTracker", "ProgressHook", "wait_until_done"]
