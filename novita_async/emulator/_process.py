"""The emulator in a subprocess: ``python -m novita_async.emulator ...``, steered over HTTP.

For tests, scripts and benchmarks that need the emulator outside their own process (so that
killing the client cannot touch it, or so that its CPU is not counted as the client's)::

    with EmulatorProcess("--task-seconds", "0.05") as emulator:
        subprocess.run(["novita-async", "run", ...], env={**os.environ, **emulator.env})
        emulator.stats()["submissions"]
        emulator.control("POST", "/__emulator/outage", {"seconds": 15})
        emulator.set_faults("webhook", {"drop": 0.1})  # webhook events too
        emulator.task_ends()  # {task_id: Unix time it ended}

It reads the ``NOVITA_*=...`` lines the emulator prints once it listens, and stops it with SIGINT
(the emulator's clean shutdown), killing it only if it has not exited ``stop_timeout`` seconds
later. Leaving the ``with`` block raises if the emulator did not exit with status 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["CLIENT_VARIABLES", "EmulatorProcess", "start_emulator_process"]

CLIENT_VARIABLES = ("NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY")
"""What the emulator prints to point a client at it (the client reads the same names)."""
_PRINTED = (*CLIENT_VARIABLES, "NOVITA_EMULATOR_IMAGES_ORIGIN", "NOVITA_EMULATOR_STATS_URL")


class EmulatorProcess:
    """``python -m novita_async.emulator OPTIONS`` in a subprocess; a context manager.

    :meth:`start` and :meth:`wait_ready` are separate so that several emulators can start at
    once; ``with`` does both (unless done already) and :meth:`stop` at the end.
    """

    def __init__(self, *options: str, log: Path | None = None, stop_timeout: float = 30.0):
        self.options = options
        self.log = log
        """Where the emulator's stderr goes (None: discarded)."""
        self.stop_timeout = stop_timeout
        self.printed: dict[str, str] = {}
        """The ``NOVITA_*`` lines the emulator printed, by name."""
        self.returncode: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._log_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        where = self.printed.get("NOVITA_BASE_URL", "not listening")
        return f"<EmulatorProcess {where}>"

    # --- where it is ----------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """``NOVITA_BASE_URL``, ``NOVITA_ASSETS_URL`` and ``NOVITA_API_KEY``: add these to a
        client process's environment."""
        return {name: self.printed[name] for name in CLIENT_VARIABLES}

    @property
    def base_url(self) -> str:
        return self.printed["NOVITA_BASE_URL"]

    @property
    def stats_url(self) -> str:
        return self.printed["NOVITA_EMULATOR_STATS_URL"]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the process (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise RuntimeError("this emulator process has been started already")
        self.printed, self.returncode = {}, None
        self._log_file = None if self.log is None else self.log.open("wb")
        command = [sys.executable, "-m", "novita_async.emulator", *self.options]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log_file or subprocess.DEVNULL,
            text=True,
        )

    def wait_ready(self) -> None:
        """Read the lines the emulator prints once it listens; stop it if it exits first."""
        assert self._process is not None and self._process.stdout is not None, "start() first"
        while self.printed.keys() < set(_PRINTED):
            line = self._process.stdout.readline()
            if not line:
                self.stop()
                where = f"; see {self.log}" if self.log else ""
                raise RuntimeError(f"the emulator exited before it listened{where}")
            name, sep, value = line.strip().partition("=")
            if sep and name.startswith("NOVITA_"):
                self.printed[name] = value

    def interrupt(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Ask the emulator to stop (SIGINT, or SIGTERM); :meth:`stop` waits for it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Stop the emulator (``sig``, then SIGKILL after ``stop_timeout``); its exit status."""
        process = self._process
        if process is not None:
            self.interrupt(sig)
            try:
                self.returncode = process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                self.returncode = process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.returncode is None:
            raise RuntimeError("this emulator process was never started")
        return self.returncode

    def __enter__(self) -> EmulatorProcess:
        if self._process is None:
            self.start()
        self.wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = self.stop()
        if status != 0 and exc_type is None:
            raise RuntimeError(f"the emulator exited with status {status}")

    # --- steering -------------------------------------------------------------------------------

    def control(self, method: str, path: str, body: object = None) -> Any:
        """Call one of the emulator's ``/__emulator/...`` routes; its JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (``EmulatorStats`` as a dict)."""
        stats: dict[str, Any] = self.control("GET", "/__emulator/stats")
        return stats

    def set_faults(
        self, route: str, spec: dict[str, Any] | None = None, script: list[str] | None = None
    ) -> int:
        """Set a route's fault spec and/or queue scripted outcomes; how many are queued now."""
        body: dict[str, Any] = {}
        if spec is not None:
            body["spec"] = spec
        if script is not None:
            body["script"] = script
        pending: int = self.control("POST", f"/__emulator/faults/{route}", body)["pending"]
        return pending

    def clear_faults(self) -> None:
        self.control("DELETE", "/__emulator/faults")

    def task_ends(self) -> dict[str, float]:
        """When each ended task ended, as a Unix time: ``{task_id: time}``."""
        ends: dict[str, float] = self.control("GET", "/__emulator/task-ends")
        return ends


def start_emulator_process(*options: str, log: Path | None = None) -> EmulatorProcess:
    """An emulator process, started and listening; ``with`` it (or call ``stop()``) to end it."""
    emulator = EmulatorProcess(*options, log=log)
    emulator.start()
    emulator.wait_ready()
    return emulator
