"""How the ``novita-async`` process ends: with obstore loaded, without the interpreter's
finalisation (obstore's Rust runtime threads, racing it, aborted the process now and then:
status 134 after a run had ended and said so), its streams flushed; otherwise as usual."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys
if sys.argv[1] == "obstore":
    import obstore  # noqa: F401  (what an object-store --out loads)
atexit.register(lambda: print("finalised", flush=True))
sys.argv = ["novita-async", "status", "--help"]
from novita_async._cli import command
command()
"""


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60
    )


def test_with_obstore_loaded_the_process_skips_finalisation_and_keeps_its_output() -> None:
    done = run("obstore")
    assert done.returncode == 0, done.stderr
    assert "usage: novita-async status" in done.stdout  # flushed before the process ended
    assert "finalised" not in done.stdout


def test_without_obstore_the_process_ends_as_usual() -> None:
    done = run("plain")
    assert done.returncode == 0, done.stderr
    assert "usage: novita-async status" in done.stdout
    assert done.stdout.rstrip().endswith("finalised")
