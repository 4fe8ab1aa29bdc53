"""``novita-async run --summary-json PATH`` and ``--json``: how a run ended, as JSON a scheduler
reads, for a run that succeeds and one that stops (a failed, an interrupted and a refused run are
in test_status.py); a path that would write over the run's own files is refused up front."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import EmulatorProcess, cli
from .test_run import job, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")


def test_json_on_stdout_is_the_whole_of_stdout_and_the_file_holds_the_same(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a"), job("grace", "forest", id="b")])
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    done = cli("run", str(jobs), "--out", str(out), "--json", "--summary-json", str(summary),
               *SMALL, env=emulator.env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # nothing else on stdout
    assert json.loads(summary.read_text(encoding="utf-8")) == report
    assert report["exit_status"] == 0
    assert (report["stop"], report["error"]) == (None, None)
    assert report["summary"]["jobs"] == report["summary"]["succeeded"] == 2
    assert report["summary"]["images"] == 2 and report["summary"]["failures_by_reason"] == {}
    assert set(report["summary"]) >= {"submitted", "http_requests", "wall_seconds", "stopped"}
    # The progress lines went to stderr, the text summary nowhere.
    assert "succeeded a" in done.stderr and "succeeded b" in done.stderr
    assert "2 jobs:" not in done.stdout + done.stderr


def test_a_stopped_run_reports_its_reason_and_message(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a"), job("grace", "forest", id="b")])
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    wrong = {**emulator.env, "NOVITA_BASE_URL": emulator.env["NOVITA_BASE_URL"] + "/nowhere"}
    done = cli("run", str(jobs), "--out", str(out), "--json", "--summary-json", str(summary),
               *SMALL, env=wrong)  # fmt: skip
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert json.loads(summary.read_text(encoding="utf-8")) == report
    assert report["exit_status"] == 3 and report["error"] is None
    assert report["stop"]["reason"] == "API_NOT_FOUND" == report["summary"]["stopped"]
    assert report["stop"]["message"].startswith(
        "the service has no such endpoint (404 API_NOT_FOUND): check NOVITA_BASE_URL"
    )
    assert report["stop"]["message"].endswith("rerun to continue")
    assert report["summary"]["succeeded"] == 0 and report["summary"]["failed"] == 0
    # The one error line is still there for a person reading the log.
    assert done.stderr.splitlines()[-1] == (
        f"novita-async: error: run stopped: {report['stop']['message']}"
    )


def test_a_report_path_over_the_runs_own_files_is_refused_before_anything_is_sent(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text("kept\n")
    before = emulator.stats()["requests"]
    for path, why in [
        (out / "results.jsonl", "must not be a file the run reads or writes"),
        (out / "a_0.png", "must not be a file the run reads or writes"),
        (jobs, "must not be a file the run reads or writes"),
        (tmp_path / "no-such-folder" / "summary.json", "must be a file in an existing folder"),
        (out, "must be a file in an existing folder"),
    ]:
        done = cli("run", str(jobs), "--out", str(out), "--summary-json", str(path), *SMALL,
                   env=emulator.env)  # fmt: skip
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert line.endswith(f"argument --summary-json: {str(path)!r} is not allowed: {why} "
                             "(see: novita-async run --help)"), line  # fmt: skip
    assert (out / "results.jsonl").read_text() == "kept\n"
    assert jobs.read_text().startswith("{")
    assert emulator.stats()["requests"] == before
