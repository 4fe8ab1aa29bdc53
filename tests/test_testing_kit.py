"""The testing kit (novita_async.testing) and its pytest plugin, as a user's tests meet them.

The plugin is tested in pytest sessions of their own (a subprocess each, on a test file written
here): under anyio's plugin alone, under pytest-asyncio's alone, under both at once, and with
Pillow missing (the kit then says which extra to install; the plugin itself still loads).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from PIL import Image

from novita_async import InstantIDRequest, NovitaClient, RetryPolicy, ServerError, TaskFailedError
from novita_async.testing import MISSING_EXTRA, emulated, emulator_process, kit_config

FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.01)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 40, 160)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_the_kit_gives_a_client_pointed_at_the_emulator_its_faults_and_counters(
    tmp_path: Path,
) -> None:
    async with emulated(retry=FAST_RETRY) as kit:
        assert kit.client.config.retry == FAST_RETRY
        assert kit.env == {
            "NOVITA_BASE_URL": kit.emulator.base_url,
            "NOVITA_ASSETS_URL": kit.emulator.assets_url,
            "NOVITA_API_KEY": kit.emulator.api_key,
        }
        kit.faults.script("submit", ["503", "ok"])
        kit.faults.fail_next_tasks(1)
        with pytest.raises(TaskFailedError):
            await kit.client.instant_id(
                InstantIDRequest(prompt="p"),
                face_images=[png()],
                ref_images=[png()],
                out_dir=tmp_path,
            )
        stats = kit.stats()
        assert stats.count("submit", 503) == 1
        assert (stats.submissions, stats.duplicate_submissions) == (1, 0)
        assert stats.count("result") >= 1  # the polls
    with pytest.raises(RuntimeError, match="not running"):
        kit.emulator.base_url  # noqa: B018  (closed on the way out)


async def test_the_kit_takes_an_emulator_configuration_and_the_client_s_key() -> None:
    config = kit_config(api_keys=["the-only-key"], seed=3)
    assert (config.seed, config.task_base_seconds, config.image_mode) == (3, 0.0, "tiny")
    async with emulated(config, api_key="another-key", retry=FAST_RETRY) as kit:
        assert kit.env["NOVITA_API_KEY"] == "the-only-key"
        with pytest.raises(Exception, match="INVALID_API_KEY"):
            await anext(aiter(kit.client.list_models()))
        assert kit.stats().count("models", 403) == 1


def test_outside_asyncio_the_kit_says_it_needs_asyncio() -> None:
    # What trio (anyio's other backend) meets: no asyncio loop is running.
    entering = emulated().__aenter__()
    with pytest.raises(RuntimeError, match="run this test on asyncio"):
        entering.send(None)
    entering.close()


def test_the_emulator_process_has_the_kit_s_defaults_and_the_options_given() -> None:
    async def list_models(env: dict[str, str]) -> None:
        retry = RetryPolicy(attempts=2, backoff_base=0.0)
        async with NovitaClient(
            env["NOVITA_API_KEY"], base_url=env["NOVITA_BASE_URL"], retry=retry
        ) as client:
            with pytest.raises(ServerError):
                await anext(aiter(client.list_models()))

    with emulator_process("--fault", "models:error_5xx=1") as emulator:
        defaults = " ".join(emulator.options[:6])
        assert defaults == "--seed 0 --task-seconds 0 --image-mode tiny"
        anyio.run(list_models, emulator.env)
        assert sum(emulator.stats()["requests"]["models"].values()) == 2


# --- the pytest plugin, in sessions of its own ------------------------------------------------

USER_TESTS = """
import os

import pytest

from novita_async import NovitaClient, RetryPolicy
from novita_async.testing import kit_config



@pytest.fixture
def novita_emulator_config():
    return kit_config(api_keys=["user-key"])


@pytest.fixture
def novita_client_options():
    return {{"retry": RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.01)}}


{mark}
async def test_fixtures(novita_client, novita_emulator):
    novita_emulator.faults.script("models", ["503", "429", "ok"])
    assert [m async for m in novita_client.list_models(query="juggernaut")]
    stats = novita_emulator.stats()
    assert (stats.count("models", 503), stats.count("models", 429)) == (1, 1)
    assert os.environ["NOVITA_API_KEY"] == "user-key"
    async with NovitaClient() as from_env:  # code that builds its own client
        assert [m async for m in from_env.list_models(query="juggernaut")]
    assert novita_emulator.stats().count("models", 200) == 2


{mark}
async def test_a_new_emulator_per_test(novita_emulator):
    assert novita_emulator.stats().count("models") == 0
"""

SYNC_TEST = """
def test_sync_with_the_client(novita_client):
    pass
"""

BASIC_INI = """[pytest]
filterwarnings =
    error
    ignore:The configuration option "asyncio_default_fixture_loop_scope":DeprecationWarning
timeout = 60
"""


def run_pytest(folder: Path, *args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """pytest in ``folder`` (with its own ini, not this repository's), in a subprocess; ``code``
    runs first, in the same interpreter."""
    args = ("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    run = f"{code}\nimport pytest, sys\nsys.exit(pytest.main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", run],
        cwd=folder,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NOVITA_"))},
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_session(folder: Path, files: dict[str, str], ini: str = "") -> None:
    (folder / "pytest.ini").write_text(BASIC_INI + ini)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else done.stderr


@pytest.mark.parametrize(
    ("ini", "disabled"),
    [("anyio_mode = auto\n", "asyncio"), ("asyncio_mode = auto\n", "anyio")],
    ids=["anyio-auto", "pytest-asyncio-auto"],  # strict mode: in the test with both plugins
)
def test_the_fixtures_run_under_either_async_plugin(
    tmp_path: Path, ini: str, disabled: str
) -> None:
    # Auto mode: the tests are not marked.
    write_session(tmp_path, {"test_user.py": USER_TESTS.format(mark="")}, ini)
    done = run_pytest(tmp_path, "-q", "-p", f"no:{disabled}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert last_line(done).startswith("2 passed"), done.stdout


def test_with_both_plugins_each_test_gets_the_kit_from_its_own_and_a_sync_test_a_reason(
    tmp_path: Path,
) -> None:
    files = {
        "test_anyio.py": USER_TESTS.format(mark="@pytest.mark.anyio"),
        "test_asyncio.py": USER_TESTS.format(mark="@pytest.mark.asyncio"),
        "test_sync.py": SYNC_TEST,
    }
    write_session(tmp_path, files)
    done = run_pytest(tmp_path, "-q")
    assert last_line(done).startswith("4 passed, 1 error"), done.stdout + done.stderr
    assert "ERROR test_sync.py::test_sync_with_the_client" in done.stdout
    assert "make the test async and let anyio's pytest plugin" in done.stdout


def test_loading_the_plugin_imports_neither_the_client_nor_the_emulator() -> None:
    heavy = ["PIL", "aiohttp", "novita_async", "attrs", "rich", "anyio"]
    code = (
        "import sys, pytest, _novita_async_pytest\n"
        f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {heavy!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_pillow_the_plugin_loads_and_the_fixture_names_the_extra(tmp_path: Path) -> None:
    files = {
        "test_user.py": """
            import pytest

            def test_unrelated():
                import novita_async  # the client itself needs no extra

            @pytest.mark.anyio
            async def test_with_the_client(novita_client):
                pass
        """
    }
    write_session(tmp_path, files, "anyio_mode = auto\n")
    blocked = "import sys\nsys.modules['PIL'] = None  # as if Pillow were not installed"
    done = run_pytest(tmp_path, "-q", code=blocked)
    assert last_line(done).startswith("1 passed, 1 error"), done.stdout + done.stderr
    assert MISSING_EXTRA in done.stdout
    assert "ERROR test_user.py::test_with_the_client" in done.stdout
