"""The state the three origins share, reachable from every request as ``request.app[STATE]``."""

from __future__ import annotations

import random

import attrs
from aiohttp import web

from ._config import EmulatorConfig
from ._faults import Faults
from ._images import ImageStore
from ._ratelimit import SubmissionLimiter
from ._signing import URLSigner
from ._stats import StatsRecorder
from ._tasks import TaskBoard

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
    assets: dict[str, bytes] = attrs.field(factory=dict, repr=False)
    asset_rng: random.Random = attrs.field(factory=random.Random, repr=False)
    images_origin: str = ""

    @classmethod
    def build(cls, config: EmulatorConfig) -> EmulatorState:
        faults = Faults(config.seed, dict(config.faults))
        for route, outcomes in config.fault_scripts.items():
            faults.script(route, outcomes)
        seed = config.seed
        return cls(
            config=config,
            faults=faults,
            stats=StatsRecorder(),
            tasks=TaskBoard(config, faults),
            images=ImageStore(config.image_mode),
            signer=URLSigner(),
            limiter=SubmissionLimiter(
                config.rate_limit_per_second, config.rate_limit_images_per_minute
            ),
            asset_rng=random.Random(None if seed is None else f"{seed}:assets"),
        )


STATE = web.AppKey("novita_emulator_state", EmulatorState)
