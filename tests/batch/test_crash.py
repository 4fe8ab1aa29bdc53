"""A real crash: the runner in a subprocess, killed with SIGKILL mid-run, then rerun.

The emulator runs in another subprocess, so the kill cannot take it down and its counters see
both runs. Synchronisation is by the child's output (it prints a line per submission, written
right after the journal's ``submitted`` record) and by reading the journal, never by sleeping.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from novita_async.emulator import EmulatorProcess
from novita_async.testing import emulator_process

from .conftest import png_bytes
from .test_resume import stray_files
from .test_runner import assert_images_decode, read_results

JOBS = 16
FINISHED = 4

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from novita_async import InstantIDRequest, NovitaClient, PollPolicy
    from novita_async.batch import BatchEventKind, BatchOptions, BatchRunner, Job

    out, face, ref, count = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

    def on_event(event):
        if event.kind is BatchEventKind.SUBMITTED:
            print("SUBMITTED", event.job_id, flush=True)

    def jobs():
        for n in range(count):
            request = InstantIDRequest(prompt=f"portrait {n}", width=128, height=128)
            yield Job(id=f"job{n}", face_images=[face], ref_images=[ref], request=request)

    async def main():
        poll = PollPolicy(min_delay=0.02, margin=0.02, initial_delay=0.05)
        async with NovitaClient() as client:
            options = BatchOptions(concurrency=4, poll=poll)
            runner = BatchRunner(client, out, options, on_event=on_event)
            summary = await runner.run_all(jobs())
        print("DONE", summary.succeeded, summary.failed, summary.resumed, flush=True)

    anyio.run(main)
    """
)


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 65536)).decode()


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    with emulator_process("--seed", "3") as running:
        yield running


async def test_a_killed_run_resumes_without_submitting_twice(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    out, script = tmp_path / "out", tmp_path / "child.py"
    script.write_text(CHILD)
    face, ref = tmp_path / "face.png", tmp_path / "ref.png"
    face.write_bytes(png_bytes(1))
    ref.write_bytes(png_bytes(2))
    env = {**os.environ, **emulator.env}
    journal = out / ".novita-journal.jsonl"

    def command(jobs: int) -> list[str]:
        return [sys.executable, str(script), str(out), str(face), str(ref), str(jobs)]

    with anyio.fail_after(60):
        # Run 1 ends normally with the first FINISHED jobs done.
        await anyio.run_process(command(FINISHED), env=env, check=True)
        # Run 2: every poll is held by the emulator, so the run fills its 4 slots and stops
        # submitting; once the 4 submissions are journaled no POST can be in flight.
        await anyio.to_thread.run_sync(
            functools.partial(emulator.set_faults, "result", script=["delay:60"] * 4)
        )
        async with await anyio.open_process(command(JOBS), env=env) as child:
            assert child.stdout is not None
            lines = BufferedByteReceiveStream(child.stdout)
            for _ in range(4):
                line = await read_line(lines)
                assert line.startswith("SUBMITTED"), line
            records = _records(journal)
            in_flight = {r["id"] for r in records if r["type"] == "submitted"}
            in_flight -= {r["id"] for r in records if r["type"] == "succeeded"}
            assert len(in_flight) == 4  # the journal had each before its line was printed
            child.send_signal(signal.SIGKILL)
            assert await child.wait() == -signal.SIGKILL
        # Drop the delays the killed run did not get to use.
        await anyio.to_thread.run_sync(emulator.clear_faults)
        # Run 3 finishes: the 4 killed tasks are followed again, the rest submitted once.
        rerun = await anyio.run_process(command(JOBS), env=env, check=True)
    done = rerun.stdout.decode().splitlines()[-1].split()
    assert done == ["DONE", str(JOBS), "0", "4"]

    stats = await anyio.to_thread.run_sync(emulator.stats)
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions"] == JOBS
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(f"job{n}" for n in range(JOBS))
    assert_images_decode(out, rows)
    assert stray_files(out) == []


def _records(journal: Path) -> list[dict[str, Any]]:
    records = []
    for line in journal.read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n"):
            records.append(json.loads(line))
    return records
