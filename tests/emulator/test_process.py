"""The emulator as a process: python -m novita_async.emulator, through EmulatorProcess."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from novita_async.emulator import EmulatorProcess, start_emulator_process


def _get(url: str, key: str | None = None) -> object:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=20) as answer:
        assert answer.status == 200
        return json.load(answer)


def test_process_prints_its_urls_serves_and_exits_cleanly_on_sigint() -> None:
    emulator = start_emulator_process("--port", "0", "--seed", "1")
    try:
        assert set(emulator.printed) == {
            "NOVITA_BASE_URL",
            "NOVITA_ASSETS_URL",
            "NOVITA_API_KEY",
            "NOVITA_EMULATOR_IMAGES_ORIGIN",
            "NOVITA_EMULATOR_STATS_URL",
        }
        env = emulator.env
        assert set(env) == {"NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY"}
        assert env["NOVITA_BASE_URL"].startswith("http://127.0.0.1:")
        assert env["NOVITA_ASSETS_URL"].endswith("/image")
        models = _get(env["NOVITA_BASE_URL"] + "/v3/model", env["NOVITA_API_KEY"])
        assert isinstance(models, dict) and models["models"]
        assert _get(emulator.stats_url) == emulator.stats()
        assert emulator.stats()["requests"] == {"models": {"200": 1}}
    finally:
        assert emulator.stop() == 0


def test_process_exits_cleanly_on_sigterm() -> None:
    emulator = start_emulator_process()
    assert emulator.stop(signal.SIGTERM) == 0


def test_port_in_use_exits_with_status_2(tmp_path: Path) -> None:
    log = tmp_path / "emulator.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        emulator = EmulatorProcess("--port", str(taken.getsockname()[1]), log=log)
        with pytest.raises(RuntimeError, match="exited before it listened"):
            emulator.__enter__()
    assert emulator.returncode == 2
    assert "cannot listen" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_failing_emulator_fails_the_with_block() -> None:
    emulator = EmulatorProcess()
    with pytest.raises(RuntimeError, match="exited with status -9"), emulator:
        emulator.interrupt(signal.SIGKILL)
    assert emulator.pid is None


def test_an_emulator_started_in_an_outage_refuses_the_api_and_stops_cleanly() -> None:
    emulator = EmulatorProcess("--outage", "seconds=3600")
    # Refused, or reset if it comes before the socket is closed; then a clean exit (status 0).
    with emulator, pytest.raises(OSError):
        _get(emulator.base_url + "/v3/model", emulator.env["NOVITA_API_KEY"])
    assert emulator.returncode == 0
