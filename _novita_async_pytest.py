"""novita-async's pytest plugin (entry point ``pytest11``): the fixtures of
:mod:`novita_async.testing`.

- ``novita_client``: a :class:`~novita_async.NovitaClient` pointed at an emulator on loopback,
  running in the test's own event loop;
- ``novita_emulator``: that :class:`~novita_async.emulator.Emulator` (``.faults``, ``.stats()``);
- ``novita_emulator_config`` and ``novita_client_options``: override them to configure the two.

While a test uses them, ``NOVITA_BASE_URL``, ``NOVITA_ASSETS_URL`` and ``NOVITA_API_KEY`` point at
the emulator, so code that builds its own ``NovitaClient()`` reaches it too (and never the real
service). The test must be async and run by anyio's plugin (on asyncio) or by pytest-asyncio's.
Provisional, as :mod:`novita_async.testing` is.

A module of its own, outside the package, and importing nothing but pytest: pytest loads every
installed plugin when it starts, and importing ``novita_async`` would bring aiohttp and the whole
client into every test run of every project that has the package installed (Hypothesis ships its
plugin the same way). The fixtures import the kit when a test asks for them, so a project that
installed ``novita-async`` without ``[emulator]`` is neither slowed nor broken by the plugin.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from novita_async import NovitaClient
    from novita_async.emulator import Emulator, EmulatorConfig
    from novita_async.testing import EmulatedNovita

_KIT = "_novita_kit"

NOT_ASYNC = (
    "novita_client and novita_emulator run in the test's event loop: make the test async and let "
    "anyio's pytest plugin (`@pytest.mark.anyio`) or pytest-asyncio's (`@pytest.mark.asyncio`) "
    "run it"
)


@pytest.fixture
def novita_emulator_config() -> EmulatorConfig | None:
    """The emulator's configuration; None: ``novita_async.testing.kit_config()``."""
    return None


@pytest.fixture
def novita_client_options() -> dict[str, Any]:
    """Keyword arguments of ``novita_client`` (``retry=``, ``timeouts=``, ``on_event=``...)."""
    return {}


@pytest.fixture
async def _novita_kit(
    novita_emulator_config: EmulatorConfig | None,
    novita_client_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[EmulatedNovita]:
    import asyncio

    from novita_async.testing import emulated

    # pytest-asyncio runs a fixture's set-up and its teardown as two asyncio tasks, but the
    # emulator's task groups must be left in the task that entered them: one task holds the kit.
    ready: asyncio.Future[EmulatedNovita] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        async with emulated(novita_emulator_config, **novita_client_options) as kit:
            ready.set_result(kit)
            await stop.wait()

    holder = asyncio.create_task(hold())
    try:
        either: list[asyncio.Future[Any]] = [ready, holder]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            holder.result()  # how it failed
        kit = ready.result()
        for name, value in kit.env.items():
            monkeypatch.setenv(name, value)
        yield kit
    finally:
        stop.set()
        await holder


@pytest.fixture
def novita_emulator(_novita_kit: EmulatedNovita) -> Emulator:
    """The emulator ``novita_client`` is pointed at: ``.faults``, ``.stats()``."""
    return _novita_kit.emulator


@pytest.fixture
def novita_client(_novita_kit: EmulatedNovita) -> NovitaClient:
    """A client pointed at ``novita_emulator``, in the test's event loop."""
    return _novita_kit.client


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
    """Hand the kit's async fixture to the plugin that runs the test: anyio's takes the async
    fixtures of the tests that use ``anyio_backend``; pytest-asyncio's, in its strict mode, only
    the fixtures it marked (and checks the mark again when the test runs), so the fixture is the
    marked one for its tests and the plain one for anyio's."""
    original = getattr(fixturedef.func, "_novita_original", fixturedef.func)
    if fixturedef.argname != _KIT or getattr(original, "__module__", None) != __name__:
        return (yield)
    if "anyio_backend" in request.fixturenames:
        fixturedef.func = original
    elif request.node.get_closest_marker("asyncio") and request.config.pluginmanager.has_plugin(
        "asyncio"
    ):
        fixturedef.func = _for_pytest_asyncio(original)
    else:
        pytest.fail(NOT_ASYNC, pytrace=False)
    return (yield)


@functools.cache
def _for_pytest_asyncio(fixture: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    import pytest_asyncio

    @functools.wraps(fixture)
    async def marked(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for value in fixture(*args, **kwargs):
            yield value

    marked._novita_original = fixture  # type: ignore[attr-defined]
    # Marks `marked` as pytest-asyncio's own fixtures are (its loop: the fixtures' default one).
    pytest_asyncio.fixture(marked)
    return marked
