"""One computation per key at a time, its result shared, optionally remembered (LRU).

The first caller for a key computes; the callers that come meanwhile wait for that call and share
its result, or its failure (never remembered: the next caller computes again). If the computing
caller is cancelled, one of the waiters computes in its place. Up to ``max_size`` results are
remembered (none by default), measured by ``size_of`` (one each by default), least recently used
dropped first. No async cache at hand (async-lru, functools) weighs results or takes the key apart
from the computation, which a batch's uploads, files and renders each need.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio
import attrs

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@attrs.define
class _Flight(Generic[V]):
    done: anyio.Event = attrs.Factory(anyio.Event)
    value: tuple[V] | None = None  # a tuple, so that None can be a result
    error: Exception | None = None


class SingleFlight(Generic[K, V]):
    def __init__(self, max_size: int = 0, *, size_of: Callable[[V], int] = lambda _: 1) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self._max_size = max_size
        self._size_of = size_of
        self._size = 0
        self._results: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._flights: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:  # the number of results remembered
        return len(self._results)

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The result for ``key``: remembered, being computed (then waited for), or computed now."""
        while True:
            if (kept := self._results.get(key)) is not None:
                self._results.move_to_end(key)
                return kept[0]
            if (flight := self._flights.get(key)) is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.value is not None:
                return flight.value[0]
            # The caller computing it was cancelled: look again, and maybe compute it here.
        flight = self._flights[key] = _Flight[V]()
        try:
            value = await compute()
            flight.value = (value,)
            if self._max_size:
                size = self._size_of(value)
                self._results[key] = (value, size)
                self._size += size
                while self._size > self._max_size:
                    _, (_, dropped) = self._results.popitem(last=False)
                    self._size -= dropped
            return value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()
