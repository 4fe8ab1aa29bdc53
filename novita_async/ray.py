"""Shards on Ray: one batch run split among K Ray actors that share the account's rate.

::

    from novita_async import BatchOptions
    from novita_async.ray import run_sharded

    summary = await run_sharded(jobs, "out", BatchOptions(rate=8.0), shards=4)

Needs ``pip install 'novita-async[ray]'``. Without ``address`` (and outside a Ray instance this
process already joined) a local Ray instance is started for the run and shut down after it.

Job ``id`` goes to shard ``shard_of(id, K)``; shard k is a Ray actor running the ordinary
:class:`~novita_async.BatchRunner` with ``options.shard = Shard(k, K)`` (its journal under
``OUT/.novita-shards/k-of-K/``, its images straight into OUT: one folder, a shared file system or
an object store). One :data:`RatePermits` actor holds the account's ``options.rate`` for all
shards, and each endpoint's pause after a 429 one of them sees; ``options.task_rates`` caps
each shard's submissions on its own (a cap of N / K per shard caps all K shards at N).
A shard actor that dies is restarted by Ray and resumes from its journal, as any rerun:
nothing is submitted twice. The driver follows the shards into ``on_event`` and at the end writes
``OUT/results.jsonl``, the lines one process would write. The API key reaches the shards wrapped
in a :class:`SecretKey` (masked in every repr); object-store credentials never leave the driver:
each node reads its own. ``docs/scale-out.md`` tells more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections import Counter, deque
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from ._client import NovitaClient
from ._config import ClientConfig, mask_secret
from ._exceptions import ConfigurationError, NovitaError, RunStoppedError
from ._failures import MAX_RAY_RESTARTS, PERMITS_TRIES
from .batch import (
    BatchEvent,
    BatchEventHook,
    BatchEventKind,
    BatchOptions,
    BatchRunner,
    BatchSummary,
    Output,
    _pacing,
    open_output,
)
from .batch._events import emit
from .batch._jobs import InvalidJob, JobInput, JobSource
from .batch._options import Shard, shard_of
from .batch._outputs import OutputLock
from .batch._pacing import DEFAULT_ENDPOINT, SubmitPermits

__all__ = ["RatePermits", "SecretKey", "run_sharded", "shard_actor_name"]

_EVENTS_KEPT = 100_000  # between two drains: a driver that stopped must not grow a shard


@attrs.frozen
class SecretKey:
    """An API key that shows itself masked: in a repr, an f-string, a log of a call's arguments."""

    _key: str

    def reveal(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return f"SecretKey({mask_secret(self._key)!r})"

    __str__ = __repr__


@attrs.frozen
class Connection:
    """The shards' client configuration as it crosses to them: the key masked in every repr."""

    api_key: SecretKey
    config: ClientConfig
    """Everything else (the key in it blanked: only ``api_key`` carries it)."""

    @classmethod
    def of(cls, config: ClientConfig) -> Connection:
        return cls(SecretKey(config.api_key), attrs.evolve(config, api_key=""))

    def client(self) -> NovitaClient:
        c = self.config
        return NovitaClient(
            self.api_key.reveal(),
            base_url=str(c.base_url),
            assets_url=str(c.assets_url),
            timeouts=c.timeouts,
            max_connections=c.max_connections,
            retry=c.retry,
            send_auth_to_assets=c.send_auth_to_assets,
        )


class PermitsProxy:
    """A shard's :class:`SubmitPermits`: the shared :class:`RatePermits` actor's handle."""

    def __init__(self, actor: object) -> None:
        self._actor = actor

    async def acquire(self, endpoint: str = DEFAULT_ENDPOINT) -> None:
        for attempt in range(PERMITS_TRIES):
            try:
                await self._actor.acquire.remote(endpoint)  # type: ignore[attr-defined]
                return
            except RayActorError:
                # Ray restarts the permits' actor (its pause forgotten, not the run's own);
                # the next call waits for it.
                if attempt == PERMITS_TRIES - 1:
                    raise

    def rate_limited(self, seconds: float, endpoint: str = DEFAULT_ENDPOINT) -> None:
        # Sent, not awaited: the refusal's handling must not wait on another process.
        self._actor.rate_limited.remote(seconds, endpoint)  # type: ignore[attr-defined]


@attrs.frozen
class ShardEnd:
    """How one shard's run ended: its summary, the attempt (actor process) that ended it, and the
    run-level stop if one ended it."""

    summary: BatchSummary
    attempt: str
    stop: tuple[str, str, str] | None = None
    """The stop's reason, what and fix: its cause may not cross processes whole."""


@attrs.frozen
class ShardProgress:
    """The events since the last :meth:`ShardRunner.drain`, the summary so far (None before the
    run began) and the attempt it belongs to."""

    events: list[BatchEvent]
    summary: BatchSummary | None
    attempt: str


class ShardRunner:
    """One shard: a :class:`BatchRunner` with ``options.shard`` set, over OUT (a folder's absolute
    path or a store's URL); ``run`` resumes from its journal, so it is called again after Ray
    restarted the actor. ``permits`` names the :class:`RatePermits` actor: a handle argument lives
    in Ray's object store and may be gone when Ray restarts the actor."""

    def __init__(
        self, out: str, options: BatchOptions, connection: Connection, permits: str | None
    ) -> None:
        self._out = out
        # Ray runs __init__ again in the process that replaces a dead one: a new attempt.
        self._attempt = secrets.token_hex(8)
        self._options = options
        self._connection = connection
        self._permits: SubmitPermits | None = (
            None if permits is None else PermitsProxy(ray.get_actor(permits))
        )
        self._events: deque[BatchEvent] = deque(maxlen=_EVENTS_KEPT)
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
            )
            runner._permits = self._permits  # the account's, shared by every shard
            try:
                with self._scope:
                    await runner.run_all(jobs)
            except RunStoppedError as stop:
                return ShardEnd(runner.summary, self._attempt, (stop.reason, stop.what, stop.fix))
        return ShardEnd(runner.summary, self._attempt)

    async def drain(self) -> ShardProgress:
        events = list(self._events)
        self._events.clear()
        summary = None if self._runner is None else self._runner.summary
        return ShardProgress(events, summary, self._attempt)

    async def stop(self) -> None:
        """Stop the run cleanly, as a signal would: nothing new is submitted, a rerun resumes."""
        self._stopped = True
        self._scope.cancel()


_POLL_SECONDS = 0.5
_ENDED = (BatchEventKind.SUCCEEDED, BatchEventKind.FAILED)

RatePermits = ray.remote(num_cpus=0, max_restarts=MAX_RAY_RESTARTS)(_pacing.RatePermits)
"""The actor holding the account's rate: ``RatePermits.remote(rate)`` (see
:class:`novita_async.batch._pacing.RatePermits`, the same permits one run uses alone)."""
_Shard = ray.remote(num_cpus=0, max_restarts=MAX_RAY_RESTARTS, max_task_retries=0)(ShardRunner)


def shard_actor_name(out: str | os.PathLike[str] | Output, shard: Shard) -> str:
    """The Ray name of the actor running ``shard`` of the run into ``out`` (in the driver's
    namespace): ``ray.get_actor(shard_actor_name(out, Shard(0, 4)))``."""
    return f"novita-async:{open_output(out).actor_key()}:{shard.name}"


class _ShardStop(NovitaError):
    """A shard's run-level stop, as the shard told it (its cause stayed in the shard)."""

    def __init__(self, reason: str, what: str) -> None:
        self._reason = reason
        super().__init__(what)

    @property
    def reason(self) -> str:
        return self._reason


async def run_sharded(
    jobs: Iterable[JobInput] | AsyncIterable[JobInput],
    out: str | os.PathLike[str] | Output,
    options: BatchOptions | None = None,
    *,
    shards: int,
    connection: ClientConfig | None = None,
    address: str | None = None,
    on_event: BatchEventHook | None = None,
) -> BatchSummary:
    """Run ``jobs`` in ``shards`` Ray actors into ``out``, with the ``options`` one
    :class:`BatchRunner` takes; the summed :class:`BatchSummary`.

    ``options.rate`` is the account's, for all shards together; the others apply to each shard.
    ``connection`` is the shards' client (default: ``ClientConfig.resolve()``, from the
    environment). ``on_event`` is called with every shard's :class:`BatchEvent` (a job's end once,
    though a restarted shard replays it). A shard stopped by a run-level cause raises
    :class:`RunStoppedError` once every shard has ended, after the results are merged.
    """
    options = options or BatchOptions()
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ConfigurationError(f"shards must be an integer >= 1, got {shards!r}")
    config = connection if connection is not None else ClientConfig.resolve()
    # For the shards, in other processes (a memory:// store refused: it lives in this one).
    destination = open_output(out, staging_dir=options.staging_dir).for_process()
    # The driver's working folder: OUT itself, or an object-store OUT's staging folder here.
    out_dir = destination.local_dir.absolute()
    parts: list[list[JobInput]] = [[] for _ in range(shards)]
    async with JobSource(jobs) as source:
        while (job := await source.next()) is not None:
            parts[shard_of(job.id, shards)].append(_absolute(job))
    lock = OutputLock(out_dir)
    await destination.check_layout(Shard(0, shards))

    def take_folder() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # one driver per OUT; each shard also locks its own folder

    await anyio.to_thread.run_sync(take_folder)
    started = not ray.is_initialized()  # joined here (local without address): shut down after
    if started:
        where: dict[str, Any] = {"include_dashboard": False} if address is None else {}
        ray.init(address, **where, log_to_driver=False, logging_level=logging.ERROR)
    try:
        run = _ShardedRun(destination, shards, attrs.evolve(options, rate=None), on_event)
        ends = await run.run(parts, options.rate, Connection.of(config))
    finally:
        lock.release()
        if started:
            ray.shutdown()
    summary = _sum(ends, run.attempts, wall=run.wall)
    stopped = next((end.stop for end in ends if end.stop is not None), None)
    if stopped is not None:
        reason, what, fix = stopped
        raise RunStoppedError(
            _ShardStop(reason, what),
            what=what,
            fix=fix,
            tasks_submitted=summary.submitted,
            summary=attrs.evolve(summary, stopped=reason),
        )
    return summary


def _absolute(job: JobInput) -> JobInput:
    """``job`` with its input paths absolute: a shard's working folder is not the driver's."""
    if isinstance(job, InvalidJob):
        return job

    def fix(sources: Sequence[Any] | None) -> Any:
        if sources is None:
            return None
        return tuple(s if isinstance(s, bytes) else Path(s).absolute() for s in sources)

    fields = ("face_images", "ref_images", "face_kps_images")
    return attrs.evolve(job, **{name: fix(getattr(job, name)) for name in fields})


class _ShardedRun:
    """The driver's side of one run: the actors, following them, merging their results."""

    def __init__(
        self,
        destination: Output,
        count: int,
        options: BatchOptions,
        on_event: BatchEventHook | None,
    ) -> None:
        self.destination = destination
        self.out = destination.actor_key()
        self.count = count
        self.options = options
        self.on_event = on_event
        self.wall = 0.0
        self.attempts: list[dict[str, BatchSummary]] = [{} for _ in range(count)]
        """Per shard, the last summary seen of each attempt (each actor process) at its run."""
        self._ended: set[str] = set()
        self._actors: list[Any] = []
        self._calls: list[Any] = [None] * count

    async def run(
        self, parts: list[list[JobInput]], rate: float | None, connection: Connection
    ) -> list[ShardEnd]:
        started = anyio.current_time()
        # The shards find the permits by this name (see ShardRunner): one per run, never reused.
        permits_name = f"novita-async:{self.out}:permits:{secrets.token_hex(8)}"
        permits = RatePermits.options(name=permits_name).remote(rate)
        self._actors = [
            _Shard.options(
                name=f"novita-async:{self.out}:{shard.name}", scheduling_strategy="SPREAD"
            ).remote(self.out, attrs.evolve(self.options, shard=shard), connection, permits_name)
            for shard in (Shard(k, self.count) for k in range(self.count))
        ]
        ends: list[ShardEnd | None] = [None] * self.count
        try:
            refs = [ray.put(part) for part in parts]
            async with anyio.create_task_group() as following:
                following.start_soon(self._follow)
                async with anyio.create_task_group() as shards:
                    for k, ref in enumerate(refs):
                        shards.start_soon(self._run_shard, k, ref, ends)
                following.cancel_scope.cancel()
            await self._drain()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise
        finally:
            for actor in [*self._actors, permits]:
                ray.kill(actor, no_restart=True)
            self.wall = anyio.current_time() - started
            with anyio.CancelScope(shield=True):
                await self.destination.merge_shard_results(self.count)
        return [end for end in ends if end is not None]

    async def _run_shard(self, k: int, jobs: Any, ends: list[ShardEnd | None]) -> None:
        deaths = 0
        while True:
            self._calls[k] = call = self._actors[k].run.remote(jobs)
            try:
                ends[k] = await call
                return
            except ActorUnavailableError:
                # Being restarted (no new death: Ray refuses the call at once rather than when
                # the actor is back): asked again a poll later.
                await anyio.sleep(_POLL_SECONDS)
            except RayActorError:
                deaths += 1
                if deaths > MAX_RAY_RESTARTS:
                    raise  # Ray gave up restarting it: the shard's jobs are left for a rerun
            except RayTaskError as exc:
                raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None

    async def _follow(self) -> None:
        while True:
            await anyio.sleep(_POLL_SECONDS)
            # Events a drain took from the actors exist nowhere else: the end of the run cancels
            # this loop while it sleeps, never halfway through a drain (which lost job lines).
            with anyio.CancelScope(shield=True):
                await self._drain()

    async def _drain(self) -> None:
        for k, actor in enumerate(self._actors):
            try:
                drained: ShardProgress = await actor.drain.remote()
            except RayActorError:
                continue  # being restarted: its events come with its rerun
            if drained.summary is not None:
                self.attempts[k][drained.attempt] = drained.summary
            for event in drained.events:
                if event.kind in _ENDED:
                    if event.job_id in self._ended:
                        continue  # replayed by a restarted shard
                    self._ended.add(event.job_id)
                emit(self.on_event, event)

    async def _stop(self) -> None:
        """The driver is stopping: stop every shard cleanly and wait for its run to end."""
        for actor in self._actors:
            actor.stop.remote()
        with anyio.move_on_after(self.options.stop_grace + 30.0):
            for call in self._calls:
                if call is not None:
                    # Whatever it ended with, its journal holds where it stands; a rerun resumes.
                    with contextlib.suppress(Exception):
                        await call
        await self._drain()


_PER_JOB = ("jobs", "succeeded", "failed", "replayed", "not_finished")
_PER_ATTEMPT = ("submitted", "resumed", "restored", "tasks", "images")


def _tallied(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for one in counts:
        total.update(one)
    return dict(total)


def _sum(
    ends: Sequence[ShardEnd], attempts: Sequence[dict[str, BatchSummary]], *, wall: float
) -> BatchSummary:
    """The shards' summaries summed: their jobs as each shard's last attempt ended them (it
    replayed the others'), and what every attempt did (submissions, tasks, images, requests)."""
    last = [end.summary for end in ends]
    every = [
        summary
        for end, seen in zip(ends, attempts, strict=True)
        for summary in [end.summary, *(s for a, s in seen.items() if a != end.attempt)]
    ]
    return BatchSummary(
        **{name: sum(getattr(s, name) for s in last) for name in _PER_JOB},
        **{name: sum(getattr(s, name) for s in every) for name in _PER_ATTEMPT},
        failures_by_reason=_tallied(s.failures_by_reason for s in last),
        http_requests=_tallied(s.http_requests for s in every),
        jobs_by_task=_tallied(s.jobs_by_task for s in last),
        wall_seconds=wall,
        interrupted=any(s.interrupted for s in last),
        stopped=next((s.stopped for s in last if s.stopped), None),
    )
