"""Run one coroutine per item with bounded concurrency, failing fast with the first error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

__all__ = ["map_limited"]

T = TypeVar("T")
R = TypeVar("R")


async def map_limited(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``[await fn(item) for item in items]``, at most ``limit`` at a time, results in order.

    The first exception cancels the rest and is raised as it is (not wrapped in an exception
    group), so callers can catch the error types they know.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(items) == 1:  # nothing to run beside it: no task group needed
        return [await fn(items[0])]
    results: list[R | None] = [None] * len(items)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(limit)

    async with anyio.create_task_group() as group:

        async def run(index: int, item: T) -> None:
            async with limiter:
                try:
                    results[index] = await fn(item)
                except Exception as exc:
                    errors.append(exc)
                    group.cancel_scope.cancel()

        for index, item in enumerate(items):
            group.start_soon(run, index, item)

    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot was filled: no error occurred
