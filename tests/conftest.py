"""Shared test configuration: anyio on asyncio (aiohttp is asyncio-only), shared fixtures.

``emu`` is the emulator on loopback every in-process test uses: the testing kit's
(``novita_async.testing.emulated``), as our users get it. Its configuration is the
``emulator_config`` fixture (a test folder's or module's conftest overrides it), plus the fields a
test names with ``@pytest.mark.emulator(task_base_seconds=3600, ...)``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import hypothesis
import pytest
from support import (
    S3Bucket,
    SmallFileSystem,
    VirtualTimeLoop,
    create_bucket,
    mount,
    virtual_time_threads,
)

from novita_async.emulator import Emulator, EmulatorConfig
from novita_async.testing import EmulatedNovita, emulated

# No per-example deadline: on a shared 2-core machine a CLI parse or a process start can take ten
# times its usual time, and a timing threshold is not what these properties are about.
hypothesis.settings.register_profile("suite", deadline=None)
hypothesis.settings.load_profile("suite")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator(**fields): EmulatorConfig fields of this test's `emu`"
    )
    config.addinivalue_line("markers", "small_fs_size(bytes): the size of this test's `small_fs`")
    config.addinivalue_line(
        "markers",
        "virtual_time: run on support.VirtualTimeLoop (timers fire without real waits); only for"
        " tests whose every server is in the test's loop",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of an ``xdist_group`` first (the heaviest, on one worker: see pyproject's
    addopts), in pytest-randomly's order otherwise; and their group named in their node id.

    pytest-xdist 3.8 names the group by setting ``item._nodeid``, which pytest 9 no longer reads
    (node ids live in ``item._id``): every group was silently split between the workers. Done
    here until xdist does it again (then the ids already end in ``@group``)."""
    grouped = [item for item in items if item.get_closest_marker("xdist_group") is not None]
    items[:] = grouped + [item for item in items if item.get_closest_marker("xdist_group") is None]
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id  # pytest >= 9 only, where the fix is needed

    for item in grouped:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(names))}")


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    if request.node.get_closest_marker("virtual_time") is not None:
        return ("asyncio", {"loop_factory": VirtualTimeLoop})
    return "asyncio"


@pytest.fixture(autouse=True)
def _virtual_time_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("virtual_time") is None:
        yield
        return
    with virtual_time_threads():
        yield


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, task_base_seconds=0)


@pytest.fixture
async def kit(
    request: pytest.FixtureRequest, emulator_config: EmulatorConfig
) -> AsyncIterator[EmulatedNovita]:
    """The testing kit: ``emu`` and a client with the default options pointed at it."""
    marker = request.node.get_closest_marker("emulator")
    config = emulator_config if marker is None else attrs.evolve(emulator_config, **marker.kwargs)
    async with emulated(config) as running:
        yield running


@pytest.fixture
def emu(kit: EmulatedNovita) -> Emulator:
    return kit.emulator


@pytest.fixture
def exited_pid() -> int:
    """The pid of a process that has exited (so no process has it, barring reuse): what a run
    killed mid-download leaves in its temporary file names."""
    code = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return int(child.stdout)


@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SmallFileSystem]:
    """A real file system that runs out of space (skipped where tmpfs cannot be mounted)."""
    path = tmp_path / "small"
    path.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    # A test may ask for another size: @pytest.mark.small_fs_size(8 * 1024 * 1024).
    marker = request.node.get_closest_marker("small_fs_size")
    size = marker.args[0] if marker is not None else SmallFileSystem.SIZE
    mounted = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallFileSystem(path)
    finally:
        # Fails (EBUSY) if a test left a file open on it: that is a leak worth seeing.
        subprocess.run(["umount", str(path)], check=True)


# --- object storage (moto's S3 server on loopback) --------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a thread on loopback, for the whole session; its endpoint URL."""
    import moto.server as moto_server  # the test extra installs moto[server] and obstore

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(
    s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> S3Bucket:
    """A new bucket, this process's environment pointing obstore at it, and a staging root of
    this test's own (``$NOVITA_ASYNC_STAGING``), never the user's cache."""
    name = "novita-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    bucket = create_bucket(s3_server, name)
    for variable, value in bucket.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("NOVITA_ASYNC_STAGING", str(tmp_path / "staging"))
    return bucket
