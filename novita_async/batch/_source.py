"""The run's input: jobs read one at a time by many workers, lazily, and closed with the run.

A sharded run (``options.shard``) reads every job and is given only its own: the others are
skipped here, counted nowhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator

import anyio

from ._job import InvalidJob, Job, JobInput
from ._shards import Shard

__all__ = ["JobSource"]


_END = object()


class JobSource:
    """The run's input, read one job at a time by many workers; closed when the run stops."""

    def __init__(
        self, jobs: Iterable[JobInput] | AsyncIterable[JobInput], shard: Shard | None = None
    ) -> None:
        self._shard = shard
        self._jobs: Iterator[JobInput] | None = None
        self._async_jobs: AsyncIterator[JobInput] | None = None
        if isinstance(jobs, AsyncIterable):
            self._async_jobs = aiter(jobs)
        else:
            self._jobs = iter(jobs)
        # An async iterator cannot be advanced by two tasks at once; a plain one is advanced
        # without a pause, so no other task can come between.
        self._reading = anyio.Lock(fast_acquire=True)
        self._exhausted = False

    async def next(self) -> JobInput | None:
        """The next job (of this shard), or None once the input is exhausted."""
        while (job := await self._next()) is not None:
            if self._shard is None or self._shard.owns(job.id):
                return job
        return None

    async def _next(self) -> JobInput | None:
        job: object
        if self._jobs is not None:
            job = next(self._jobs, _END)
            if job is _END:
                return None
        else:
            assert self._async_jobs is not None
            async with self._reading:
                if self._exhausted:
                    return None
                try:
                    job = await anext(self._async_jobs)
                except StopAsyncIteration:
                    self._exhausted = True
                    return None
        if not isinstance(job, Job | InvalidJob):
            raise TypeError(f"jobs must be Job or InvalidJob objects, got {job!r}")
        return job

    async def __aenter__(self) -> JobSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A generator given is closed now, not whenever it is collected (its finally blocks run).
        if self._async_jobs is not None:
            aclose = getattr(self._async_jobs, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        elif isinstance(self._jobs, Generator):
            self._jobs.close()
