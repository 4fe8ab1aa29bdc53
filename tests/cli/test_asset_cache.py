"""``novita-async run`` after the service forgot the assets an earlier run uploaded (issue 20,
defect 3), against an emulator process that refuses them as the real service may: a plain 400
``INVALID_REQUEST_BODY`` naming nothing (``--asset-errors plain``)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import cli, emulator_process
from .test_run import job, results, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")


def test_a_rerun_after_the_service_forgot_its_assets_uploads_them_again_and_succeeds(
    tmp_path: Path, pictures: Path
) -> None:
    out = tmp_path / "out"
    options = ("--task-seconds", "0.05", "--image-mode", "tiny", "--asset-errors", "plain")
    with emulator_process(*options) as emulator:
        first = write_jobs(tmp_path, [job("ada", "beach", id="a", prompt="ada a")])
        done = cli("run", str(first), "--out", str(out), *SMALL, env=emulator.env)
        assert done.returncode == 0, done.stderr
        assert emulator.control("POST", "/__emulator/forget", {"assets": "all"})["assets"] == 2

        # The earlier job and two new ones with the same inputs.
        lines = [job("ada", "beach", id=name, prompt=f"ada {name}") for name in ("a", "b", "c")]
        second = write_jobs(tmp_path, lines)
        done = cli("run", str(second), "--out", str(out), *SMALL, env=emulator.env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert {r["id"]: r["status"] for r in results(out).values()} == {
            "a": "succeeded", "b": "succeeded", "c": "succeeded",
        }  # fmt: skip
        stats = emulator.stats()
    # Each of the two inputs uploaded again once; no task made twice.
    assert stats["uploads"] == 4
    assert stats["submissions"] == 3 and stats["duplicate_submissions"] == 0
    assert stats["faults"]["forgotten_asset"] >= 1
    journal = (out / ".novita-journal.jsonl").read_text().splitlines()
    assets = [json.loads(line) for line in journal if '"type":"asset"' in line]
    assert len(assets) == 4 and len({a["asset_id"] for a in assets}) == 4
    assert {a["endpoint"] for a in assets} == {emulator.env["NOVITA_ASSETS_URL"]}
