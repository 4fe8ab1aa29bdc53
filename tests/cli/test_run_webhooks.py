"""``novita-async run --webhook-listen HOST:PORT --webhook-url URL``: the service's events reach
the run through the public URL (here a TCP relay of the test's own, standing for the proxy, tunnel
or NAT that webhooks are deployed behind) and do the work, polling only catching up; and
``--webhook-url`` without ``--webhook-listen`` is refused before anything is sent, naming both."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import served

from .conftest import EmulatorProcess, cli, emulator_process
from .test_run import job, write_jobs

JOBS = 20


@pytest.fixture(scope="module")
def webhook_emulator() -> Iterator[EmulatorProcess]:
    """An emulator of this module's own: its counters are this module's runs alone."""
    with emulator_process("--task-seconds", "0.05", "--image-mode", "tiny") as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class _Pipe(socketserver.BaseRequestHandler):
    server: Relay

    def handle(self) -> None:
        self.server.connections += 1
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.target), timeout=30)
        except OSError:  # the run has ended: the service's attempt fails, as it would for real
            return
        with upstream:
            back = threading.Thread(target=_copy, args=(upstream, self.request))
            back.start()
            _copy(self.request, upstream)
            back.join()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:  # the other side went away: nothing left to relay
        pass


class Relay(socketserver.ThreadingTCPServer):
    """Connections to this server's port piped to ``127.0.0.1:target``: a stand-in for the
    proxy, tunnel or NAT in front of a webhook receiver."""

    daemon_threads = False
    block_on_close = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of deliveries, which the
    # kernel retries a second later: events late enough to be polled for.
    request_queue_size = 128

    def __init__(self, target: int) -> None:
        super().__init__(("127.0.0.1", 0), _Pipe)
        self.target = target
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def relay() -> Iterator[Relay]:
    with served(Relay(free_port())) as server:
        yield server


def test_webhook_listen_with_a_public_url_completes_by_events(
    tmp_path: Path, pictures: Path, webhook_emulator: EmulatorProcess, relay: Relay
) -> None:
    lines = [job(face, scene, id=f"j{n:02d}") for n, (face, scene) in enumerate(
        [("ada", "beach"), ("grace", "forest"), ("ada", "forest"), ("grace", "beach")] * 5
    )]  # fmt: skip
    assert len(lines) == JOBS
    jobs = write_jobs(tmp_path, lines)
    out, summary_path = tmp_path / "out", tmp_path / "summary.json"
    before = webhook_emulator.stats()
    done = cli(
        "run", str(jobs), "--out", str(out), "--no-progress", "--summary-json", str(summary_path),
        "--webhook-listen", f"127.0.0.1:{relay.target}", "--webhook-url", relay.url,
        env=webhook_emulator.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(summary_path.read_text(encoding="utf-8"))
    summary = report["summary"]
    assert summary["jobs"] == summary["succeeded"] == summary["tasks"] == JOBS
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == [f"j{n:02d}" for n in range(JOBS)]
    assert {row["status"] for row in rows} == {"succeeded"}
    assert all((out / name).stat().st_size > 0 for row in rows for name in row["files"])

    after = webhook_emulator.stats()
    hooks = {name: after["webhooks"][name] - before["webhooks"][name] for name in after["webhooks"]}
    polls = summary["http_requests"].get("result", 0)
    # Every task asked for its event at the public URL. The run listens on the relay's target
    # only, so whatever reached it came through the relay: through --webhook-url.
    assert after["submissions"] - before["submissions"] == JOBS
    assert hooks["events"] == JOBS and relay.connections >= 1
    # The events did the work: a task is polled only when its event is over a second late, so a
    # run that ignored them would poll each task at least once (measured here: every event
    # delivered, no poll, 2.0 requests per job besides uploads).
    assert hooks["delivered"] > JOBS / 2 and polls < JOBS / 2, (hooks, summary["http_requests"])
    asked = sum(summary["http_requests"].values()) - summary["http_requests"].get("upload", 0)
    assert asked / JOBS < 2.5, summary["http_requests"]  # a submit, a download, few polls


def test_webhook_url_without_webhook_listen_is_refused_naming_both(
    tmp_path: Path, pictures: Path, webhook_emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a")])
    before = webhook_emulator.stats()
    done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--no-progress",
               "--webhook-url", "http://127.0.0.1:9/hook", env=webhook_emulator.env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--webhook-url" in done.stderr and "--webhook-listen" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    after = webhook_emulator.stats()
    assert after["requests"] == before["requests"]  # nothing sent, nothing uploaded
    assert not (tmp_path / "out").exists()


def test_a_webhook_flag_with_webhook_listen_is_refused_naming_both(
    tmp_path: Path, pictures: Path, webhook_emulator: EmulatorProcess
) -> None:
    """Every task's event would go to --webhook's URL, never to the run's receiver: the run
    would quietly poll every task. Refused before anything is sent."""
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a")])
    before = webhook_emulator.stats()
    listen = f"127.0.0.1:{free_port()}"
    done = cli("run", str(jobs), "--out", str(tmp_path / "out"), "--no-progress",
               "--webhook", "https://example.invalid/hook",
               "--webhook-listen", listen, env=webhook_emulator.env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--webhook/--webhook-listen" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert webhook_emulator.stats()["requests"] == before["requests"]
    assert not (tmp_path / "out").exists()
