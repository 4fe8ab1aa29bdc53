"""Emulator: three aiohttp origins (API, assets, images) and the task workers, as one context."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Literal

import anyio
from aiohttp import web

from ._config import DEFAULT_API_KEY, EmulatorConfig
from ._fault_specs import ROUTES, check_route
from ._faults import Faults
from ._listeners import Listener, bind_origins, origin_url, run_outages
from ._middleware import emulated_route
from ._results import announce_end
from ._routes_api import add_api_routes, not_found
from ._routes_control import add_control_routes
from ._routes_storage import add_asset_routes, add_image_routes
from ._state import STATE, EmulatorState
from ._stats import EmulatorStats

__all__ = ["MAX_API_BODY", "Emulator"]

MAX_API_BODY = 96 * 1024 * 1024
"""The largest request body the API origin reads (aiohttp answers 413 above it)."""


class Emulator:
    """A local emulator of the Novita image API, for tests, demos and benchmarks.

    ::

        async with Emulator(EmulatorConfig(task_base_seconds=0)) as emu:
            emu.base_url, emu.assets_url, emu.api_key
            emu.faults.script("submit", ["503", "ok"])
            emu.stats().submissions
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._state = EmulatorState.build(self.config)
        self._state.tasks.on_end = functools.partial(announce_end, self._state)
        self._stack: contextlib.AsyncExitStack | None = None
        self._origins: list[str] = []

    def __repr__(self) -> str:
        where = self._origins[0] if self._origins else "not running"
        return f"<Emulator {where}>"

    # --- addresses ----------------------------------------------------------------------------

    def _origin_at(self, index: int) -> str:
        if not self._origins:
            raise RuntimeError("the emulator is not running; use `async with Emulator() as emu`")
        return self._origins[index]

    @property
    def base_url(self) -> str:
        """The API origin, e.g. ``http://127.0.0.1:8000``."""
        return self._origin_at(0)

    @property
    def assets_url(self) -> str:
        """The asset upload URL (``PUT``), e.g. ``http://127.0.0.1:8001/image``."""
        return self._origin_at(1) + "/image"

    @property
    def images_origin(self) -> str:
        """The origin the signed image URLs point at."""
        return self._origin_at(2)

    @property
    def api_key(self) -> str:
        """A key the emulator accepts."""
        keys = self.config.api_keys
        return min(keys) if keys else DEFAULT_API_KEY

    # --- introspection and control --------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._state.faults

    def stats(self) -> EmulatorStats:
        return self._state.snapshot()

    def reset_stats(self) -> None:
        self._state.stats.reset()

    def set_credit_balance(self, units: int) -> None:
        """Set the account's balance, in 1/10,000 USD (a top-up, or 0 to run it out)."""
        self._state.set_credit_balance(units)

    async def wait_task(self, task_id: str, status: str | None = None) -> str:
        """Wait until the task reaches ``status`` (default: a final status); returns its status.

        Returns early with the final status if the task finished without passing ``status``.
        """
        if self._state.tasks.get(task_id) is None:
            raise LookupError(f"no task {task_id}")
        return await self._state.tasks.wait(task_id, status)

    async def wait_in_flight(self, route: str, count: int = 1) -> None:
        """Wait until at least ``count`` requests to ``route`` are being handled (or held)."""
        in_flight = self._state.stats.in_flight
        check_route(route)
        await self._state.stats.wait_for(lambda: in_flight[route] >= count)

    async def wait_stats(self, predicate: Callable[[EmulatorStats], bool]) -> EmulatorStats:
        """Wait until ``predicate(stats)`` holds (checked as requests start and end)."""
        await self._state.stats.wait_for(lambda: predicate(self.stats()))
        return self.stats()

    def task_ids(self) -> list[str]:
        """Every task created so far, oldest first (e.g. to ``faults.forget_tasks`` them)."""
        return self._state.tasks.ids()

    def asset_ids(self) -> list[str]:
        """Every asset uploaded so far, oldest first (e.g. to ``faults.forget_assets`` them)."""
        return list(self._state.assets)

    def task_ends(self, clock: Literal["unix", "emulator"] = "unix") -> dict[str, float]:
        """When each ended task ended: ``{task_id: moment}``, as a Unix time (``time.time()``, to
        compare with moments taken in another process) or on the emulator's event-loop clock."""
        return self._state.tasks.ends(unix=clock == "unix")

    def webhook_counts(self) -> dict[str, dict[str, int]]:
        """Webhook deliveries per task that had one: ``{task_id: {"attempted", "delivered",
        "retries", "dropped", "failed"}}`` (the totals are in ``stats().webhooks``)."""
        return self._state.stats.webhooks_of_tasks()

    def task_status(self, task_id: str) -> str:
        record = self._state.tasks.get(task_id)
        if record is None:
            raise LookupError(f"no task {task_id}")
        return record.status

    # --- lifecycle --------------------------------------------------------------------------------

    def _apps(self) -> list[web.Application]:
        limit = self.config.max_asset_bytes + 1024
        # Room for the v3 tasks' inline images: two of 30 MB in base64 (inpainting), and more.
        api = web.Application(middlewares=[emulated_route], client_max_size=MAX_API_BODY)
        add_api_routes(api)
        add_control_routes(api)
        api.router.add_route("*", "/{tail:.*}", not_found)
        assets = web.Application(middlewares=[emulated_route], client_max_size=limit)
        add_asset_routes(assets)
        images = web.Application(middlewares=[emulated_route])
        add_image_routes(images)
        for app in (api, assets, images):
            app[STATE] = self._state
        return [api, assets, images]

    async def __aenter__(self) -> Emulator:
        if self._stack is not None:
            raise RuntimeError("this Emulator is already running")
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            # Bind first, so a port in use raises a plain OSError (not one wrapped by the group).
            sockets = bind_origins(config.host, config.port)
            for sock in sockets:
                stack.callback(sock.close)
            # Closed after the workers: no task ends once the sender has closed.
            await stack.enter_async_context(self._state.webhooks)
            workers = await stack.enter_async_context(anyio.create_task_group())
            workers.start_soon(self._state.tasks.run)
            stack.callback(workers.cancel_scope.cancel)
            stack.push_async_callback(self._state.tasks.aclose)
            origins = [origin_url(config.host, sock) for sock in sockets]
            self._state.images_origin = origins[2]
            listeners = []
            for app, sock in zip(self._apps(), sockets, strict=True):
                runner = web.AppRunner(
                    app,
                    access_log=None,  # access logs would carry signed query strings
                    handle_signals=False,
                    shutdown_timeout=config.shutdown_timeout,
                )
                await runner.setup()
                stack.push_async_callback(runner.cleanup)
                listeners.append(Listener(runner, sock))
                await listeners[-1].start()
            # Ended before the runners are cleaned up, so an outage cannot restart a closed site.
            outages = await stack.enter_async_context(anyio.create_task_group())
            outages.start_soon(run_outages, self.faults, self._state.stats, listeners[0])
            stack.callback(outages.cancel_scope.cancel)
            self.faults.start()
            # Held requests must not stall the shutdown.
            stack.callback(self._release_all)
            self._origins = origins
            self._stack = stack.pop_all()
        return self

    def _release_all(self) -> None:
        for route in ROUTES:
            self.faults.release(route)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._origins = []
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
