"""Faults: the handle that says what goes wrong, changeable while the emulator runs.

Per route (see :mod:`._fault_specs` for the outcomes): ``set(route, FaultSpec(...))`` draws outcomes
at random (seeded), for good or ``for_seconds``; ``script(route, [...])`` queues exact outcomes for
the next requests; ``hold(route)`` parks requests until ``release(route)``. Per task:
``fail_next_tasks(n)``. Run-level: ``account_error(...)`` refuses the account after N more tasks,
``outage(...)`` takes the API origin off the network for a while, ``forget_tasks(...)`` /
``forget_assets(...)`` make the service answer as if it never had them. Webhook events:
``webhooks`` (a :class:`WebhookFaults`: drop, delay, duplicate, out of order). ``clear()`` undoes
it all.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
import attrs

from ._fault_specs import (
    DEFAULT_TASK_FAILURE,
    ROUTES,
    AccountError,
    Decision,
    FaultSpec,
    Outage,
    Outcome,
    check_route,
    parse_script_token,
)
from ._webhook_faults import WebhookFaults

__all__ = ["Faults"]


class Faults:
    """Fault injection of one emulator; reach it as ``emu.faults``."""

    def __init__(
        self,
        seed: int | None = None,
        initial: dict[str, FaultSpec] | None = None,
        *,
        account_error: AccountError | None = None,
        outage: Outage | None = None,
    ) -> None:
        self._seed = seed
        self._started = False
        # A spec with its start on the event loop's clock (None: not started yet).
        self._specs: dict[str, tuple[FaultSpec, float | None]] = {}
        self._scripts: dict[str, deque[Decision]] = {route: deque() for route in ROUTES}
        self._rngs = {route: self._rng(route) for route in ROUTES}
        self._gates: dict[str, anyio.Event] = {}
        self._task_failures: deque[str] = deque()
        self._account: AccountError | None = None
        self._account_left = 0
        self._planned: Outage | None = None
        self._outage_left = 0
        self._outage: Outage | None = None
        self._cut_short = False
        self._outage_event: anyio.Event | None = None
        self._forgotten: set[str] = set()
        self.webhooks = WebhookFaults(seed)
        """The faults of webhook events: ``faults.webhooks.set(drop=0.1)``, ``.script([...])``."""
        for route, spec in (initial or {}).items():
            self.set(route, spec)
        if account_error is not None:
            self.account_error(account_error)
        if outage is not None:
            self.outage(outage)

    def _rng(self, route: str) -> random.Random:
        # One generator per route, so traffic on one route does not shift the draws of another.
        return random.Random(None if self._seed is None else f"{self._seed}:{route}")

    # --- per route ----------------------------------------------------------------------------

    def set(self, route: str, spec: FaultSpec | None = None, **fields: Any) -> None:
        """Replace the route's fault spec (``set("submit", error_5xx=0.1)`` works too)."""
        check_route(route)
        since = anyio.current_time() if self._started else None
        self._specs[route] = (attrs.evolve(spec or FaultSpec(), **fields), since)

    def get(self, route: str) -> FaultSpec:
        """The route's spec now (a default one once a ``for_seconds`` spec has lapsed)."""
        entry = self._specs.get(check_route(route))
        if entry is None:
            return FaultSpec()
        spec, since = entry
        lapse = spec.for_seconds
        if lapse is not None and since is not None and anyio.current_time() >= since + lapse:
            del self._specs[route]
            return FaultSpec()
        return spec

    def script(self, route: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next requests to ``route``, in order; then back to the spec."""
        self._scripts[check_route(route)].extend(parse_script_token(o) for o in outcomes)

    def pending(self, route: str) -> int:
        """How many scripted outcomes are still queued for ``route``."""
        return len(self._scripts[check_route(route)])

    def hold(self, route: str) -> None:
        """Park every request to ``route`` (after it is counted as in flight) until release."""
        if check_route(route) not in self._gates:
            self._gates[route] = anyio.Event()

    def release(self, route: str) -> None:
        gate = self._gates.pop(check_route(route), None)
        if gate is not None:
            gate.set()

    def fail_next_tasks(self, count: int = 1, reason: str = DEFAULT_TASK_FAILURE) -> None:
        """The next ``count`` tasks submitted end TASK_STATUS_FAILED with ``reason``."""
        self._task_failures.extend([reason] * count)

    # --- run-level ------------------------------------------------------------------------------

    def account_error(self, error: AccountError | None = None, **fields: Any) -> None:
        """Refuse the account after ``after`` more tasks: ``account_error(after=20)`` (balance
        used up), ``account_error(status=403, reason="INVALID_API_KEY")``. See AccountError."""
        self._account = AccountError(**fields) if error is None else attrs.evolve(error, **fields)
        self._account_left = self._account.after

    def outage(self, outage: Outage | None = None, **fields: Any) -> None:
        """Take the API origin down for ``seconds``, at once or after ``after`` more tasks:
        ``outage(seconds=15)``, ``outage(seconds=15, after=20)``. See Outage."""
        planned = Outage(**fields) if outage is None else attrs.evolve(outage, **fields)
        self._planned, self._outage_left = planned, planned.after
        if not planned.after:
            self._begin_outage()

    def forget_tasks(self, task_ids: Iterable[str]) -> None:
        """The service no longer knows these tasks: their results answer 404 TASK_NOT_FOUND."""
        self._forgotten.update(task_ids)

    def forget_assets(self, asset_ids: Iterable[str]) -> None:
        """The service no longer knows these assets: a submission naming one answers 400."""
        self._forgotten.update(asset_ids)

    @property
    def outage_active(self) -> bool:
        """True from the moment an outage begins until the API origin listens again."""
        return self._outage is not None

    def clear(self, route: str | None = None) -> None:
        """Remove specs and scripts (of one route, or all) and release held requests; without a
        route, also the task failures, the account error, the outage (one under way ends now),
        the forgotten ids and the webhook faults."""
        for name in ROUTES if route is None else (check_route(route),):
            self._specs.pop(name, None)
            self._scripts[name].clear()
            self.release(name)
        if route is None:
            self._task_failures.clear()
            self._account = self._planned = None
            self._forgotten.clear()
            self.webhooks.clear()
            if self._outage is not None:
                self._cut_short = True
                self._outage_changed()

    # --- used by the server ---------------------------------------------------------------------

    def start(self) -> None:
        """The emulator is serving: ``for_seconds`` windows set before now start now."""
        self._started = True
        now = anyio.current_time()
        self._specs = {route: (spec, now) for route, (spec, _) in self._specs.items()}

    async def wait_gate(self, route: str) -> None:
        gate = self._gates.get(route)
        if gate is not None:
            await gate.wait()

    def take_task_failure(self) -> str | None:
        return self._task_failures.popleft() if self._task_failures else None

    def task_created(self) -> None:
        """Count a created task towards the ``after`` of the account error and the outage."""
        if self._account is not None and self._account_left:
            self._account_left -= 1
        if self._planned is not None and self._outage_left:
            self._outage_left -= 1

    def account_refusal(self, route: str) -> AccountError | None:
        """The account error to answer ``route`` with now, if any."""
        error = self._account
        if error is None or self._account_left or route not in error.routes:
            return None
        return error

    def outage_blocks(self) -> bool:
        """Whether a request reaching the API origin now is cut off by an outage (one under way,
        or a planned one whose ``after`` has run out: it begins now)."""
        if self._outage is None and self._planned is not None and not self._outage_left:
            self._begin_outage()
        return self._outage is not None

    def forgets(self, task_or_asset_id: str) -> bool:
        return task_or_asset_id in self._forgotten

    async def next_outage(self) -> Outage:
        """Wait until an outage begins."""
        while self._outage is None:
            await self._outage_change()
        return self._outage

    async def wait_outage_cut_short(self, outage: Outage) -> None:
        """Wait until ``outage`` is cut short (by ``clear()``, or a new outage replacing it)."""
        while self._outage is outage and not self._cut_short:
            await self._outage_change()

    def outage_ended(self, outage: Outage) -> None:
        """The API origin listens again after ``outage``."""
        if self._outage is outage:
            self._outage, self._cut_short = None, False

    def _begin_outage(self) -> None:
        self._outage, self._planned = self._planned, None
        self._outage_changed()

    async def _outage_change(self) -> None:
        if self._outage_event is None:
            self._outage_event = anyio.Event()
        await self._outage_event.wait()

    def _outage_changed(self) -> None:
        event, self._outage_event = self._outage_event, None
        if event is not None:
            event.set()

    def decide(self, route: str) -> Decision:
        spec = self.get(route)
        rng = self._rngs[route]
        delay = spec.latency + (rng.uniform(0.0, spec.jitter) if spec.jitter else 0.0)
        script = self._scripts[route]
        if script:
            scripted = script.popleft()
            return attrs.evolve(scripted, delay=delay + scripted.delay, bandwidth=spec.bandwidth)
        outcome = Outcome.OK
        draw = rng.random()
        for candidate, weight in spec.weights():
            if draw < weight:
                outcome = candidate
                break
            draw -= weight
        status = 200
        if outcome is Outcome.ERROR_5XX:
            status = rng.choice((500, 503))
        elif outcome is Outcome.HTML_5XX:
            status = rng.choice((502, 504))
        elif outcome is Outcome.RATE_429:
            status = 429
        elif outcome is Outcome.EXPIRE:
            status = 403
        http_date = outcome is Outcome.RATE_429 and rng.random() < spec.retry_after_http_date
        return Decision(
            outcome,
            status=status,
            retry_after=spec.retry_after,
            http_date=http_date,
            delay=delay,
            bandwidth=spec.bandwidth,
        )
