from .._completion import (
    PROMISES,
    DurationModel,
    request_cost,
    server_seconds,
)

__all__ = ["PROMISES", "DurationModel", "request_cost", "server_seconds"]
