"""``novita-async run`` never writes over its own job file (issue "The run folder")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import EmulatorProcess, cli


@pytest.mark.parametrize("name", ["results.jsonl", "index.html", "a_0.png"])
def test_a_job_file_where_the_run_writes_is_refused_before_anything_is_touched(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess, name: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    jobs = out / name
    line = {"face_images": [str(pictures / "ada.png")], "ref_images": [str(pictures / "beach.png")],
            "prompt": "p"}  # fmt: skip
    jobs.write_text(json.dumps(line) + "\n")
    before = jobs.read_bytes()
    requests = emulator.stats()["requests"]
    done = cli("run", str(jobs), "--out", str(out), env=emulator.env)
    assert done.returncode == 2, done.stderr
    assert "is a file the run writes" in done.stderr
    assert jobs.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else created
    assert emulator.stats()["requests"] == requests


def test_a_journal_path_naming_the_job_file_is_refused(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("")
    done = cli(
        "run", str(jobs), "--out", str(tmp_path / "out"), "--journal", str(jobs), env=emulator.env
    )
    assert done.returncode == 2 and "is a file the run writes" in done.stderr
    assert jobs.read_text() == ""
