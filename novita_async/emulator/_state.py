"""The state the three origins share, reachable from every request as ``request.app[STATE]``."""

from __future__ import annotations

import random

import anyio
import attrs
from aiohttp import web

from ._config import EmulatorConfig
from ._faults import Faults
from ._images import ImageStore
from ._ratelimit import SubmissionLimiter
from ._signing import URLSigner
from ._stats import EmulatorStats, StatsRecorder
from ._tasks import TaskBoard
from ._webhooks import WebhookSender

__all__ = ["STATE", "EmulatorState"]


@attrs.define(eq=False)
class EmulatorState:
    config: EmulatorConfig
    faults: Faults
    stats: StatsRecorder
    tasks: TaskBoard
    images: ImageStore
    signer: URLSigner
    limiter: SubmissionLimiter
    webhooks: WebhookSender
    assets: dict[str, bytes] = attrs.field(factory=dict, repr=False)
    asset_times: dict[str, float] = attrs.field(factory=dict, repr=False)
    """When each asset was uploaded, on the event loop's clock (for ``asset_ttl``)."""
    asset_rng: random.Random = attrs.field(factory=random.Random, repr=False)
    images_origin: str = ""
    credit_balance: int = 0
    """The account's balance now, in 1/10,000 USD: ``config.credit_balance`` less what the tasks
    created so far cost (see :meth:`charge`)."""

    @classmethod
    def build(cls, config: EmulatorConfig) -> EmulatorState:
        faults = Faults(
            config.seed,
            dict(config.faults),
            account_error=config.account_error,
            outage=config.outage,
        )
        for route, outcomes in config.fault_scripts.items():
            faults.script(route, outcomes)
        if config.webhook_faults is not None:
            faults.webhooks.set(config.webhook_faults)
        faults.webhooks.script(config.webhook_script)
        seed = config.seed
        stats = StatsRecorder()
        return cls(
            config=config,
            faults=faults,
            stats=stats,
            tasks=TaskBoard(config, faults),
            images=ImageStore(config.image_mode),
            signer=URLSigner(),
            limiter=SubmissionLimiter(
                config.rate_limit_per_second,
                config.rate_limit_images_per_minute,
                config.route_images_per_minute,
            ),
            webhooks=WebhookSender(config, faults.webhooks, stats),
            asset_rng=random.Random(None if seed is None else f"{seed}:assets"),
            credit_balance=config.credit_balance,
        )

    def snapshot(self) -> EmulatorStats:
        return self.stats.snapshot(
            self.tasks.counts(), self.faults.outage_active, self.credit_balance
        )

    def set_credit_balance(self, units: int) -> None:
        if isinstance(units, bool) or not isinstance(units, int) or units < 0:
            raise ValueError(f"credit balance: expected an integer >= 0, got {units!r}")
        self.credit_balance = units

    def cost(self, route: str, images: int) -> int | None:
        """What a task of ``images`` images on ``route`` costs, or None if the balance cannot pay
        for it (nothing is paid from a zero balance, even a free task)."""
        cost = self.config.image_costs.get(route, 0) * images
        return None if self.credit_balance <= 0 or cost > self.credit_balance else cost

    def asset_known(self, asset_id: str) -> bool:
        """Whether a submission may name ``asset_id`` (uploaded, not forgotten, not expired)."""
        if self.faults.forgets(asset_id):
            self.stats.faults["forgotten_asset"] += 1
            return False
        ttl = self.config.asset_ttl
        uploaded = self.asset_times.get(asset_id)
        if ttl is not None and uploaded is not None and anyio.current_time() - uploaded >= ttl:
            # Its bytes stay: the pictures of tasks made from it still show them.
            self.stats.faults["expired_asset"] += 1
            return False
        return asset_id in self.assets

    def add_asset(self, asset_id: str, data: bytes) -> None:
        self.assets[asset_id] = data
        self.asset_times[asset_id] = anyio.current_time()


STATE = web.AppKey("novita_emulator_state", EmulatorState)
