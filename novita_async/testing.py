"""A testing kit: the package's emulator as a fixture, for tests of code that uses the client.

In a test, on the test's own event loop (asyncio: the emulator serves with aiohttp)::

    from novita_async.testing import emulated

    async with emulated() as kit:
        kit.faults.set("submit", error_5xx=0.2)  # the emulator's faults (Faults)
        kit.faults.fail_next_tasks(1)
        await code_under_test(kit.client)  # a NovitaClient pointed at the emulator
        assert kit.stats().duplicate_submissions == 0

With pytest, the package's plugin (loaded by its entry point, under anyio's or pytest-asyncio's
plugin) gives the same as fixtures: ``novita_client`` and ``novita_emulator``; a test overrides
``novita_emulator_config`` (an :class:`~novita_async.emulator.EmulatorConfig`) or
``novita_client_options`` (keyword arguments of the client) to change them, and finds the
``NOVITA_*`` variables set to the emulator for the test's duration. For tests that run the command
line or kill processes, :func:`emulator_process` runs the same emulator in a process of its own.

The emulator serves the v3 image tasks too (txt2img, img2img, inpainting, upscale: the same
checks of every field, range and input limit as the service documents), counts each route's
tasks, and counts any field it does not know, so a test can assert that each endpoint got its
jobs once and that nothing undocumented was sent::

    async with emulated() as kit:
        request = Img2ImgRequest(model_name="m.safetensors", prompt="a cat", strength=0.6)
        task_id = await kit.client.submit(request, images={"image": "cat.png"})
        stats = kit.stats()
        assert stats.submissions_by_route == {"img2img": 1}
        assert stats.unknown_fields == {}  # {route: {field path: submissions}} otherwise
        assert stats.duplicate_submissions == 0

``kit_config(route_images_per_minute=DOCUMENTED_IMAGES_PER_MINUTE)`` (from
``novita_async.emulator``) limits each route as the service does by default, and each task spends
the account's balance (``stats().credit_balance``, ``GET /v3/user``; ``credit_balance=0`` refuses
every submission with 400 ``BILLING_BALANCE_NOT_ENOUGH``).

The emulator draws its pictures with Pillow: ``pip install 'novita-async[emulator]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._client import NovitaClient
from ._config import ENV_API_KEY, ENV_ASSETS_URL, ENV_BASE_URL

if TYPE_CHECKING:
    from .emulator import Emulator, EmulatorConfig, EmulatorProcess, EmulatorStats, Faults

__all__ = ["EmulatedNovita", "emulated", "emulator_process", "kit_config"]

MISSING_EXTRA = (
    "novita_async.testing runs the emulator, which needs Pillow: "
    "pip install 'novita-async[emulator]'"
)

# What a test wants unless it says otherwise: reproducible, tasks that end at once, small images.
_KIT_DEFAULTS: dict[str, Any] = {"seed": 0, "task_base_seconds": 0.0, "image_mode": "tiny"}
_KIT_OPTIONS = ("--seed", "0", "--task-seconds", "0", "--image-mode", "tiny")


def _emulator_package() -> Any:
    """``novita_async.emulator``, imported on first use: it needs the ``emulator`` extra."""
    try:
        from . import emulator
    except ImportError as missing:
        raise ImportError(MISSING_EXTRA) from missing
    return emulator


def kit_config(**fields: Any) -> EmulatorConfig:
    """The kit's emulator configuration: seed 0, tasks that end at once, tiny images; ``fields``
    are other :class:`~novita_async.emulator.EmulatorConfig` fields (or override these)."""
    config: EmulatorConfig = _emulator_package().EmulatorConfig(**{**_KIT_DEFAULTS, **fields})
    return config


class EmulatedNovita:
    """An emulator on loopback and a client pointed at it: what :func:`emulated` yields."""

    def __init__(self, emulator: Emulator, client: NovitaClient) -> None:
        self.emulator = emulator
        self.client = client

    def __repr__(self) -> str:
        return f"<EmulatedNovita {self.emulator.base_url}>"

    @property
    def faults(self) -> Faults:
        """The emulator's fault knobs (latency, 5xx and 429 rates, scripts, failed tasks,
        outages, account errors, ``.webhooks`` for dropped or late events)."""
        return self.emulator.faults

    def stats(self) -> EmulatorStats:
        """The emulator's counters (submissions, duplicate submissions, requests per route and
        status, e.g. ``stats().count("result")`` polls, webhooks, outages; for the v3 tasks
        ``submissions_by_route``, ``unknown_fields`` and the ``credit_balance`` left)."""
        return self.emulator.stats()

    @property
    def env(self) -> dict[str, str]:
        """``NOVITA_BASE_URL``, ``NOVITA_ASSETS_URL``, ``NOVITA_API_KEY``: where a client built
        from the environment (``NovitaClient()``) finds the emulator."""
        emulator = self.emulator
        return {
            ENV_BASE_URL: emulator.base_url,
            ENV_ASSETS_URL: emulator.assets_url,
            ENV_API_KEY: emulator.api_key,
        }


@contextlib.asynccontextmanager
async def emulated(
    config: EmulatorConfig | None = None, **client_options: Any
) -> AsyncIterator[EmulatedNovita]:
    """Start the emulator on free loopback ports in the running event loop and yield it with a
    :class:`NovitaClient` pointed at it; both are closed on the way out.

    ``config`` defaults to :func:`kit_config`; ``client_options`` are the client's keyword
    arguments (``retry=``, ``timeouts=``, ``on_event=``, ``api_key=``...).
    """
    package = _emulator_package()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "the emulator serves with aiohttp, on asyncio: run this test on asyncio "
            "(anyio's plugin: an `anyio_backend` fixture returning 'asyncio')"
        ) from None
    async with package.Emulator(config or kit_config()) as emulator:
        options = {"base_url": emulator.base_url, "assets_url": emulator.assets_url}
        options.update(client_options)
        async with NovitaClient(options.pop("api_key", emulator.api_key), **options) as client:
            yield EmulatedNovita(emulator, client)


def emulator_process(*options: str, log: Path | None = None) -> EmulatorProcess:
    """The same emulator in a process of its own, with the kit's defaults (:func:`kit_config`)
    before ``options`` (``python -m novita_async.emulator --help`` lists them; a later option
    wins)::

        with emulator_process("--fault", "submit:error_5xx=0.1") as emulator:
            subprocess.run(["novita-async", "run", ...], env={**os.environ, **emulator.env})
            emulator.stats()["submissions"]

    For tests that run the command line or kill the client's process: an async test starts its
    commands with ``anyio.run_process``. See :class:`~novita_async.emulator.EmulatorProcess`.
    """
    process: EmulatorProcess = _emulator_package().EmulatorProcess(*_KIT_OPTIONS, *options, log=log)
    return process
