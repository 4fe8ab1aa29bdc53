"""A local emulator of the Novita InstantID API, with fault injection.

Three origins, as in production: the API (``base_url``), the asset upload host (``assets_url``)
and the image host the signed result URLs point at (``images_origin``)::

    from novita_async.emulator import Emulator, EmulatorConfig, FaultSpec

    async with Emulator(EmulatorConfig(seed=1, task_base_seconds=0)) as emu:
        emu.faults.set("submit", FaultSpec(error_5xx=0.05, reset_after=0.01))
        emu.faults.script("result", ["503", "429", "ok"])
        ...  # point a client at emu.base_url / emu.assets_url with emu.api_key
        assert emu.stats().duplicate_submissions == 0

Run it as a process with ``python -m novita_async.emulator`` (see ``--help``).
"""

from __future__ import annotations

from ._config import EmulatorConfig, ImageMode
from ._faults import ROUTES, Faults, FaultSpec, Outcome
from ._server import Emulator
from ._stats import EmulatorStats

__all__ = [
    "ROUTES",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "FaultSpec",
    "Faults",
    "ImageMode",
    "Outcome",
]
