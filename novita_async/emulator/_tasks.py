"""Task lifecycle: a pool of K workers takes tasks in submission order, on the event loop's clock.

A task is ``TASK_STATUS_QUEUED`` until a worker is free, ``TASK_STATUS_PROCESSING`` for its
duration, then ``TASK_STATUS_SUCCEED`` or ``TASK_STATUS_FAILED``. Nothing spins: a worker sleeps
for the task's duration. Prompt markers target one task: ``[[fail]]`` or ``[[fail:reason]]`` makes
it fail, ``[[seconds:N]]`` sets its duration. ``on_end`` (if set) hears of every task that ends,
as it ends: the moment its webhook event is due.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import _spec
from ._config import EmulatorConfig
from ._fault_specs import DEFAULT_TASK_FAILURE
from ._faults import Faults
from ._images import InputPicture

__all__ = ["TaskBoard", "TaskRecord"]

_FINAL = (_spec.STATUS_SUCCEED, _spec.STATUS_FAILED)
_ORDER = {_spec.STATUS_QUEUED: 0, _spec.STATUS_PROCESSING: 1, **dict.fromkeys(_FINAL, 2)}
_FAIL_MARKER = re.compile(r"\[\[fail(?::([^\]]*))?\]\]")
_SECONDS_MARKER = re.compile(r"\[\[seconds:([0-9.]+)\]\]")


@attrs.define(eq=False)
class TaskRecord:
    task_id: str
    owner: str = attrs.field(repr=False)
    body: dict[str, Any] = attrs.field(repr=False)
    seed: int
    duration: float
    sequence: int
    submitted_at: float
    submitted_wall_ms: int
    failure: str | None = None
    image_names: tuple[str, ...] = ()
    task_type: str = "INSTANT_ID"
    inputs: tuple[InputPicture, ...] = attrs.field(default=(), repr=False)
    """A v3 task's input image (and mask) as its pictures show them: thumbnails and hashes, not
    the inputs (none when the pictures do not show them, in ``tiny`` image mode)."""
    status: str = _spec.STATUS_QUEUED
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    """When the task ended, on the event loop's clock."""
    ended_wall: float | None = None
    """When the task ended, as a Unix time (to compare with moments taken in other processes)."""
    changed: anyio.Event = attrs.field(factory=anyio.Event, repr=False)

    @property
    def image_type(self) -> str:
        extra = self.body.get("extra") or {}
        return str(extra.get("response_image_type") or "png")

    @property
    def is_final(self) -> bool:
        return self.status in _FINAL

    @property
    def finished_wall_ms(self) -> int | None:
        return None if self.ended_wall is None else int(self.ended_wall * 1000)


class TaskBoard:
    """Every task of the run, and the workers that carry them out."""

    def __init__(self, config: EmulatorConfig, faults: Faults) -> None:
        self._config = config
        self._faults = faults
        self._rng = random.Random(None if config.seed is None else f"{config.seed}:tasks")
        self._tasks: dict[str, TaskRecord] = {}
        self._counts: Counter[str] = Counter()
        self._submitted = 0
        self._started = 0
        self._running: set[TaskRecord] = set()
        self.on_end: Callable[[TaskRecord], None] | None = None
        self._send: MemoryObjectSendStream[TaskRecord]
        self._receive: MemoryObjectReceiveStream[TaskRecord]
        self._send, self._receive = anyio.create_memory_object_stream[TaskRecord](math.inf)

    # --- creation -----------------------------------------------------------------------------

    def _duration(self, body: dict[str, Any]) -> float:
        config = self._config
        if marker := _SECONDS_MARKER.search(body["prompt"]):
            return float(marker.group(1))
        megapixels = int(body["width"]) * int(body["height"]) / 1_000_000
        work = config.step_seconds * int(body["steps"]) * megapixels * int(body["image_num"])
        duration = (config.task_base_seconds + work) / config.speed_factor
        if config.task_jitter:
            duration *= 1 + self._rng.uniform(-config.task_jitter, config.task_jitter)
        return max(0.0, duration)

    def _failure(self, body: dict[str, Any]) -> str | None:
        if marker := _FAIL_MARKER.search(body["prompt"]):
            return marker.group(1) or DEFAULT_TASK_FAILURE
        if (scripted := self._faults.take_task_failure()) is not None:
            return scripted
        if self._rng.random() < self._config.task_failure_rate:
            return DEFAULT_TASK_FAILURE
        return None

    def create(
        self,
        owner: str,
        body: dict[str, Any],
        *,
        task_type: str = "INSTANT_ID",
        inputs: tuple[InputPicture, ...] = (),
    ) -> TaskRecord:
        asked = body.get("seed")
        seed = asked if isinstance(asked, int) and asked >= 0 else self._rng.randrange(2**32)
        ext = str((body.get("extra") or {}).get("response_image_type") or "png")
        names = tuple(f"{self._rng.getrandbits(128):032x}.{ext}" for _ in range(body["image_num"]))
        record = TaskRecord(
            task_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            owner=owner,
            body=body,
            seed=seed,
            duration=self._duration(body),
            sequence=self._submitted,
            submitted_at=anyio.current_time(),
            submitted_wall_ms=int(time.time() * 1000),
            failure=self._failure(body),
            image_names=names,
            task_type=task_type,
            inputs=inputs,
        )
        self._submitted += 1
        self._tasks[record.task_id] = record
        self._counts[record.status] += 1
        self._send.send_nowait(record)
        return record

    def simulated(
        self, owner: str, body: dict[str, Any], status: str, task_type: str = "INSTANT_ID"
    ) -> TaskRecord:
        """A task that ended with ``status`` without running, kept nowhere (a webhook test)."""
        now, clock = time.time(), anyio.current_time()
        return TaskRecord(
            task_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            owner=owner,
            body=body,
            seed=0,
            duration=0.0,
            sequence=-1,
            submitted_at=clock,
            submitted_wall_ms=int(now * 1000),
            status=status,
            reason="simulated failure (webhook test mode)" if status == _spec.STATUS_FAILED else "",
            ended_at=clock,
            ended_wall=now,
            task_type=task_type,
        )

    # --- lookup -------------------------------------------------------------------------------

    def get(self, task_id: str, owner: str | None = None) -> TaskRecord | None:
        record = self._tasks.get(task_id)
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    def ids(self) -> list[str]:
        return list(self._tasks)

    def ends(self, unix: bool = True) -> dict[str, float]:
        """When each ended task ended: ``{task_id: moment}``, a Unix time or (``unix=False``)
        on the event loop's clock."""
        moments = {
            task_id: record.ended_wall if unix else record.ended_at
            for task_id, record in self._tasks.items()
        }
        return {task_id: moment for task_id, moment in moments.items() if moment is not None}

    def counts(self) -> dict[str, int]:
        return {status: n for status, n in self._counts.items() if n}

    def progress(self, record: TaskRecord) -> tuple[int, int]:
        """``(progress_percent, eta)`` as the result endpoint reports them right now."""
        if record.is_final:
            return 0, 0  # as the documented example: a finished task reports 0 and 0
        if record.started_at is None:
            percent, remaining = 0, self._queue_wait(record) + record.duration
        else:
            elapsed = anyio.current_time() - record.started_at
            fraction = min(elapsed / record.duration, 0.99) if record.duration else 0.99
            percent, remaining = int(fraction * 100), max(record.duration - elapsed, 0.0)
        if not self._config.eta_honest:
            remaining *= self._rng.uniform(0.0, 3.0)
        return percent, math.ceil(remaining)

    def _queue_wait(self, record: TaskRecord) -> float:
        """When a queued task will start: once enough running tasks end (the first of them
        exactly, later waves estimated at this task's own duration)."""
        now = anyio.current_time()
        ahead = record.sequence - self._started
        busy = len(self._running)
        if busy + ahead < self._config.workers:
            return 0.0
        first_free = min(
            (r.duration - (now - (r.started_at or now)) for r in self._running), default=0.0
        )
        waves = (ahead + busy - self._config.workers) // self._config.workers
        return max(first_free, 0.0) + waves * record.duration

    async def wait(self, task_id: str, status: str | None = None) -> str:
        """Wait until the task reaches ``status`` (or any final status); return its status."""
        record = self._tasks[task_id]
        target = _ORDER[status] if status is not None else 2
        while not record.is_final and _ORDER[record.status] < target:
            await record.changed.wait()
        return record.status

    # --- workers ------------------------------------------------------------------------------

    def _move(self, record: TaskRecord, status: str) -> None:
        self._counts[record.status] -= 1
        self._counts[status] += 1
        record.status = status
        changed, record.changed = record.changed, anyio.Event()
        changed.set()

    async def run(self) -> None:
        """Run the worker pool until cancelled."""
        async with self._receive, anyio.create_task_group() as workers:
            for _ in range(self._config.workers):
                workers.start_soon(self._work, self._receive.clone())

    async def _work(self, receive: MemoryObjectReceiveStream[TaskRecord]) -> None:
        async with receive:
            async for record in receive:
                self._started += 1
                record.started_at = anyio.current_time()
                self._running.add(record)
                self._move(record, _spec.STATUS_PROCESSING)
                try:
                    await anyio.sleep(record.duration)
                finally:
                    self._running.discard(record)
                record.ended_at, record.ended_wall = anyio.current_time(), time.time()
                if record.failure is not None:
                    record.reason = record.failure
                    self._move(record, _spec.STATUS_FAILED)
                else:
                    self._move(record, _spec.STATUS_SUCCEED)
                if self.on_end is not None:
                    self.on_end(record)

    async def aclose(self) -> None:
        await self._send.aclose()
