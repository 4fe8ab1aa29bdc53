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


def _jobs(folder: Path, pictures: Path, count: int, name: str = "jobs", **fields: object) -> Path:
    path = folder / f"{name}.jsonl"
    lines = [
        {"id": f"j{n}", "face_images": [str(pictures / "ada.png")],
         "ref_images": [str(pictures / "beach.png")], "prompt": f"job {n}", **fields}
        for n in range(count)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_dry_run_counts_against_finished_work_sends_nothing_and_writes_nothing(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    out = tmp_path / "out"
    jobs = _jobs(tmp_path, pictures, 3)
    assert cli("run", str(jobs), "--out", str(out), env=emulator.env).returncode == 0
    more = _jobs(
        tmp_path, pictures, 5, "more", image_num=2
    )  # j0-j2 changed now (image_num), j3-j4 new
    lines = more.read_text().splitlines()
    lines[3] = lines[3].replace('"prompt"', '"steps": 999, "prompt"')  # a line that cannot run
    more.write_text("\n".join(lines) + "\n")
    before = sorted(p.name for p in out.iterdir())
    requests = emulator.stats()["requests"]

    done = cli(
        "run",
        str(more),
        "--out",
        str(out),
        "--dry-run",
        "--rate",
        "2",
        env={**emulator.env, "NOVITA_API_KEY": ""},
    )  # fmt: skip  (no key needed: nothing is sent; the asset URL says which uploads are saved)
    assert done.returncode == 1, done.stderr
    assert "dry run: nothing was sent" in done.stdout
    assert "5 jobs: 0 already done, 0 failed earlier" in done.stdout
    assert "1 to submit" in done.stdout and "3 changed since their task was made" in done.stdout
    assert "1 tasks and 2 images would be paid for; 0 distinct files would be uploaded" in (
        done.stdout
    )
    assert "at --rate 2: about 0.5s of submissions" in done.stdout
    assert "j3: INVALID_JOB_LINE: line 4, field steps" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written in OUT
    assert emulator.stats()["requests"] == requests

    # The journal's asset ids belong to the emulator's asset endpoint: against another one
    # (--assets-url, as a run would upload to) every distinct file is counted as an upload.
    elsewhere = cli(
        "run", str(more), "--out", str(out), "--dry-run",
        "--assets-url", "http://127.0.0.1:9/image", env={**emulator.env, "NOVITA_API_KEY": ""},
    )  # fmt: skip
    assert elsewhere.returncode == 1, elsewhere.stderr
    assert "0 distinct files would be uploaded" not in elsewhere.stdout
    assert "distinct files would be uploaded" in elsewhere.stdout

    same = cli("run", str(jobs), "--out", str(out), "--dry-run", "--json", env=emulator.env)
    assert same.returncode == 0
    report = json.loads(same.stdout)
    assert (report["jobs"], report["done"], report["to_submit"], report["problems"]) == (
        3,
        3,
        0,
        [],
    )


def test_max_tasks_stops_with_exit_4_and_a_rerun_continues(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    out = tmp_path / "out"
    jobs = _jobs(tmp_path, pictures, 5)
    before = emulator.stats()["submissions"]
    done = cli("run", str(jobs), "--out", str(out), "--max-tasks", "2", env=emulator.env)
    assert done.returncode == 4, done.stderr
    assert "budget of 2 new tasks is spent" in done.stderr
    assert emulator.stats()["submissions"] - before == 2
    assert cli("run", str(jobs), "--out", str(out), "--max-tasks", "2",
               env=emulator.env).returncode == 4  # fmt: skip
    last = cli("run", str(jobs), "--out", str(out), "--max-tasks", "2", env=emulator.env)
    assert last.returncode == 0, last.stderr
    assert emulator.stats()["submissions"] - before == 5
