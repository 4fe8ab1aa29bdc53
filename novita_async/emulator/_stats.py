"""Server-side counters, and the frozen snapshot tests and benchmarks assert on."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import attrs

__all__ = ["WEBHOOK_COUNTERS", "EmulatorStats", "StatsRecorder"]

WEBHOOK_COUNTERS = (
    "events",
    "attempted",
    "delivered",
    "retries",
    "timeouts",
    "failed",
    "dropped",
    "duplicated",
    "reordered",
    "delayed",
)
"""The counters of ``EmulatorStats.webhooks`` (see there); each is always present."""
_PER_TASK = ("attempted", "delivered", "retries", "dropped", "failed")


@attrs.frozen
class EmulatorStats:
    """A snapshot of the emulator's counters, taken by ``Emulator.stats()``.

    ``requests`` maps a route (``upload``, ``submit``, ``result``, ``models``, ``image``) to
    counts per outcome: the HTTP status as a string (``"200"``, ``"429"``), or ``"reset"`` /
    ``"truncated"`` for answers that never completed, ``"client_closed"`` when the client left
    mid-body.
    """

    requests: dict[str, dict[str, int]]
    submissions: int
    """Tasks created (a submit whose answer was then lost still counts: the task exists)."""
    duplicate_submissions: int
    """Tasks created from a JSON body identical to an earlier submission's."""
    submissions_by_route: dict[str, int]
    """Tasks created per submission route (``submit`` for InstantID, ``txt2img``, ``img2img``,
    ``inpainting``, ``upscale``); only routes with a task are present."""
    unknown_fields: dict[str, dict[str, int]]
    """Per v3 route, the fields of valid submissions the emulator does not know, by path
    (``request.cfg_scale``, ``extra.foo``, ``request.loras[].weight``): how many submissions sent
    each. Empty when none was sent."""
    uploads: int
    image_downloads: int
    """Image answers started with status 200 (including truncated ones)."""
    image_bytes: int
    """Image body bytes written."""
    unexpected_auth: int
    """Requests carrying ``Authorization`` where it must not go (asset uploads, image URLs)."""
    rate_limited: int
    """Submissions refused by the rate limits (injected 429s are in ``faults``)."""
    credit_balance: int
    """The account's balance now, in 1/10,000 USD (``GET /v3/user``'s ``credit_balance``): the
    configured one less what the tasks created cost (not reset by ``reset_stats``)."""
    faults: dict[str, int]
    """Injected outcomes by name: the drawn or scripted ones (``error_5xx``, ``reset_after``, ...),
    ``account_error`` (requests refused by it), ``balance_not_enough`` (submissions the balance
    could not pay for), ``outage_reset`` (requests reset as they reached
    the API origin while it was going down), ``forgotten_task`` (404 TASK_NOT_FOUND answered for a
    forgotten task), ``forgotten_asset`` (submissions refused naming a forgotten asset),
    ``expired_asset`` (naming an asset older than ``asset_ttl``)."""
    tasks: dict[str, int]
    """Tasks by current status."""
    in_flight: dict[str, int]
    """Requests being handled right now, per route."""
    outages: int
    """Outages of the API origin, counted once its listening socket is closed. The connections
    refused meanwhile are the kernel's answer, which the emulator never sees: not counted."""
    outage_active: bool
    """The API origin is down right now (from the moment an outage begins until it listens
    again)."""
    webhooks: dict[str, int]
    """Webhook deliveries: ``events`` (tasks that ended asking for one, and test-mode events),
    ``attempted`` (POSTs started, retries and duplicates included), ``delivered`` (attempts
    answered 2xx), ``retries`` (attempts after a delivery's first), ``timeouts`` (attempts not
    answered in time), ``failed`` (deliveries given up after every retry), and the injected
    ``dropped``, ``duplicated``, ``reordered`` (held for out of order) and ``delayed``; plus
    ``pending``, a gauge: events not yet delivered, given up or dropped."""

    def count(self, route: str, status: int | str | None = None) -> int:
        """Requests to ``route`` (with ``status``, if given)."""
        by_status = self.requests.get(route, {})
        if status is None:
            return sum(by_status.values())
        return by_status.get(str(status), 0)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class StatsRecorder:
    """The live, mutable counters behind :class:`EmulatorStats`."""

    def __init__(self) -> None:
        # A gauge, not a counter: reset() leaves it alone so requests in flight still balance.
        self.in_flight: Counter[str] = Counter()
        self.webhooks_pending = 0
        self._in_flight_changed = anyio.Event()
        self.reset()

    def reset(self) -> None:
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.submissions = 0
        self.duplicate_submissions = 0
        self.by_route: Counter[str] = Counter()
        self.unknown_fields: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.uploads = 0
        self.image_downloads = 0
        self.image_bytes = 0
        self.unexpected_auth = 0
        self.rate_limited = 0
        self.outages = 0
        self.faults: Counter[str] = Counter()
        self.webhooks: Counter[str] = Counter()
        self.webhooks_by_task: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._bodies: set[bytes] = set()

    def enter(self, route: str) -> None:
        self.in_flight[route] += 1
        self.changed()

    def leave(self, route: str) -> None:
        self.in_flight[route] -= 1
        self.changed()

    def changed(self) -> None:
        """Wake :meth:`wait_for`: called as requests start and end, and as outages begin and end."""
        changed, self._in_flight_changed = self._in_flight_changed, anyio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is checked at every :meth:`changed`."""
        while not predicate():
            await self._in_flight_changed.wait()

    def record_request(self, route: str, outcome: int | str) -> None:
        self.requests[route][str(outcome)] += 1

    def record_webhook(self, task_id: str, counter: str) -> None:
        """Count a webhook happening (one of WEBHOOK_COUNTERS), for the task too."""
        self.webhooks[counter] += 1
        if counter in _PER_TASK:
            self.webhooks_by_task[task_id][counter] += 1
        self.changed()

    def webhooks_of_tasks(self) -> dict[str, dict[str, int]]:
        """Per task: attempted, delivered, retries, dropped, failed (each always present)."""
        return {
            task_id: {name: counts[name] for name in _PER_TASK}
            for task_id, counts in self.webhooks_by_task.items()
        }

    def record_submission(
        self, body: Any, route: str = "submit", unknown: tuple[str, ...] = ()
    ) -> None:
        """Count a created task; canonical JSON makes key order and spacing irrelevant. ``body``
        is what makes two submissions the same: a v3 task's with a stand-in for each inline image
        (:func:`~._v3_validation.validate_v3`'s ``same_as``), not megabytes of base64."""
        self.submissions += 1
        self.by_route[route] += 1
        for path in unknown:
            self.unknown_fields[route][path] += 1
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(route.encode() + b"\n" + canonical).digest()
        if digest in self._bodies:
            self.duplicate_submissions += 1
        else:
            self._bodies.add(digest)

    def snapshot(
        self, tasks: dict[str, int], outage_active: bool, credit_balance: int
    ) -> EmulatorStats:
        return EmulatorStats(
            requests={route: dict(counts) for route, counts in self.requests.items()},
            submissions=self.submissions,
            duplicate_submissions=self.duplicate_submissions,
            submissions_by_route=dict(self.by_route),
            unknown_fields={route: dict(c) for route, c in self.unknown_fields.items() if c},
            uploads=self.uploads,
            image_downloads=self.image_downloads,
            image_bytes=self.image_bytes,
            unexpected_auth=self.unexpected_auth,
            rate_limited=self.rate_limited,
            credit_balance=credit_balance,
            faults=dict(self.faults),
            tasks=tasks,
            in_flight={route: n for route, n in self.in_flight.items() if n},
            outages=self.outages,
            outage_active=outage_active,
            webhooks={
                **{name: self.webhooks[name] for name in WEBHOOK_COUNTERS},
                "pending": self.webhooks_pending,
            },
        )
