"""The Ray actors of a sharded run (see :mod:`novita_async.ray`): the account's submission permits,
and the shards, each an ordinary :class:`BatchRunner` over the jobs whose id hashes to it.

Both are plain classes here; :mod:`novita_async.ray` makes them actors (``ray.remote``) with the
options a run needs. They run on the actor's asyncio event loop, one task per call: a shard's
``run`` goes on while the driver calls ``drain`` to follow it, and ``stop`` to end it.

The API key crosses to the shards as a :class:`SecretKey`, whose repr (what Ray may show of a call's
arguments) is masked; only the shard's client ever reads it.
"""

from __future__ import annotations

import collections
import os
import secrets
from collections.abc import Sequence

import anyio
import attrs

from ._client import NovitaClient
from ._config import ClientConfig, Timeouts
from ._exceptions import RunStoppedError
from ._redact import mask_secret
from .batch import BatchEvent, BatchOptions, BatchRunner, BatchSummary
from .batch._job import JobInput
from .batch._limits import SubmitPermits

__all__ = [
    "Connection",
    "PermitsProxy",
    "SecretKey",
    "ShardEnd",
    "ShardProgress",
    "ShardRunner",
]

# The events a shard keeps for the driver between two of its polls (a driver that stopped
# polling must not make a shard's memory grow).
_EVENTS_KEPT = 100_000
_PERMITS_TRIES = 4


class SecretKey:
    """An API key that shows itself masked: in a repr, an f-string, a log of a call's arguments."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = key

    def reveal(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return f"SecretKey({mask_secret(self._key)!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[SecretKey], tuple[str]]:
        return (SecretKey, (self._key,))


@attrs.frozen
class Connection:
    """What a shard's client needs, resolved on the driver (its environment, its flags)."""

    api_key: SecretKey
    base_url: str
    assets_url: str
    timeouts: Timeouts

    @classmethod
    def of(cls, config: ClientConfig) -> Connection:
        return cls(
            api_key=SecretKey(config.api_key),
            base_url=str(config.base_url),
            assets_url=str(config.assets_url),
            timeouts=config.timeouts,
        )

    def client(self) -> NovitaClient:
        return NovitaClient(
            self.api_key.reveal(),
            base_url=self.base_url,
            assets_url=self.assets_url,
            timeouts=self.timeouts,
        )


class PermitsProxy:
    """A shard's side of the shared :class:`RatePermits` (a Ray actor handle): a
    :class:`SubmitPermits`."""

    def __init__(self, actor: object) -> None:
        self._actor = actor

    async def acquire(self) -> None:
        from ray.exceptions import RayActorError

        for attempt in range(_PERMITS_TRIES):
            try:
                await self._actor.acquire.remote()  # type: ignore[attr-defined]
                return
            except RayActorError:
                # Ray restarts the permits' actor (its pause forgotten, not the run's own);
                # the next call waits for it.
                if attempt == _PERMITS_TRIES - 1:
                    raise

    def rate_limited(self, seconds: float) -> None:
        # Sent, not awaited: the refusal's handling must not wait on another process.
        self._actor.rate_limited.remote(seconds)  # type: ignore[attr-defined]


@attrs.frozen
class ShardEnd:
    """How one shard's run ended: its summary, and the run-level stop if one ended it."""

    summary: BatchSummary
    attempt: str
    """Which attempt (actor process) ended it: the driver adds the earlier attempts' counts."""
    stop_reason: str | None = None
    stop_what: str = ""
    stop_fix: str = ""


@attrs.frozen
class ShardProgress:
    """What :meth:`ShardRunner.drain` tells the driver: the events since the last call, the
    summary so far (None before the run began) and the attempt it belongs to."""

    events: list[BatchEvent]
    summary: BatchSummary | None
    attempt: str


class ShardRunner:
    """One shard: a :class:`BatchRunner` with ``options.shard`` set, over OUT shared with the
    other shards. ``run`` resumes from the shard's journal, as any rerun does, so calling it
    again after Ray restarted the actor (a new process) continues where the dead one stopped.

    ``out`` is a folder's absolute path or an object store's URL: a shard's store client reads
    the credentials of its own node's environment; none travels with the actor's arguments.

    ``permits`` is the Ray name of the run's :class:`RatePermits` actor, looked up here, not its
    handle: Ray keeps a handle argument in its object store, and a constructor argument there may
    be gone when Ray restarts the actor (Ray warns of it on every run); a name is a plain value.
    """

    def __init__(
        self,
        out: str,
        options: BatchOptions,
        connection: Connection,
        permits: str | None,
    ) -> None:
        self._out = out
        # Ray runs __init__ again in the process that replaces a dead one: a new attempt.
        self._attempt = secrets.token_hex(8)
        self._options = options
        self._connection = connection
        self._permits: SubmitPermits | None = None
        if permits is not None:
            import ray

            self._permits = PermitsProxy(ray.get_actor(permits))
        self._events: collections.deque[BatchEvent] = collections.deque(maxlen=_EVENTS_KEPT)
        self._runner: BatchRunner | None = None
        self._scope = anyio.CancelScope()
        self._stopped = False

    def __repr__(self) -> str:
        return f"<ShardRunner {self._options.shard} of {self._out}>"

    async def run(self, jobs: Sequence[JobInput]) -> ShardEnd:
        """Run the shard's ``jobs`` to their end (or until :meth:`stop`)."""
        self._scope = anyio.CancelScope()
        if self._stopped:
            self._scope.cancel()
        async with self._connection.client() as client:
            self._runner = runner = BatchRunner(
                client, self._out, self._options, on_event=self._events.append
            )  # fmt: skip
            runner._permits = self._permits
            try:
                with self._scope:
                    await runner.run_all(jobs)
            except RunStoppedError as stop:
                # Its cause may not cross processes whole: the driver gets its words.
                return ShardEnd(runner.summary, self._attempt, stop.reason, stop.what, stop.fix)
        return ShardEnd(runner.summary, self._attempt)

    async def drain(self) -> ShardProgress:
        """The events since the last call, and the summary so far."""
        events = list(self._events)
        self._events.clear()
        summary = None if self._runner is None else self._runner.summary
        return ShardProgress(events, summary, self._attempt)

    async def stop(self) -> None:
        """Stop the run cleanly, as a signal would: nothing new is submitted, a rerun resumes."""
        self._stopped = True
        self._scope.cancel()

    async def pid(self) -> int:
        return os.getpid()
