"""The benchmark harness, end to end at ``--quick`` scale, so it cannot rot.

One quick run (every scenario, every contender available here) is shared by the checks below.
Nothing here asserts a timing: the machines are shared and noisy, timings live in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the harness lives beside the package; plain `pytest` too
    sys.path.insert(0, str(ROOT))

from benchmarks._scenarios import SCENARIOS, Scenario  # noqa: E402
from benchmarks._spec import RunSpec  # noqa: E402
from benchmarks.contenders.sdk import usable as sdk_unusable  # noqa: E402

# Scenarios without injected faults, and which contenders must finish every job in each (the
# floor has no retries, so a rate limit costs it jobs by design).
MUST_COMPLETE = {
    "throughput": ("novita-async", "floor"),
    "rate-limited": ("novita-async",),
    "polling": ("novita-async", "floor"),
    "scale-10k": ("novita-async",),
    "scale-100k": ("novita-async",),
    "big-image": ("novita-async",),
}


def _repo_files() -> dict[Path, bytes]:
    """What a quick run must leave alone: the repo's table and the full run's results."""
    paths = [ROOT / "BENCHMARKS.md", *(ROOT / "benchmarks" / "results").glob("*.*")]
    return {path: path.read_bytes() for path in paths if path.is_file()}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("bench-results")
    before = _repo_files()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert _repo_files() == before, "--quick wrote over the repo's benchmark files"
    return results


def _result(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return data


def _runs(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    return {run["contender"]: run for run in _result(folder, name)["runs"]}


def test_every_scenario_ran_every_available_contender(quick: Path) -> None:
    for name, scenario in SCENARIOS.items():
        result = _result(quick, name)
        assert result["quick"] is True
        assert result["jobs"] == scenario.quick_jobs
        expected = set(scenario.contenders)
        if sdk_unusable():
            expected.discard("official-sdk")
        assert set(_runs(quick, name)) == expected, name


def test_fault_free_scenarios_complete_every_job(quick: Path) -> None:
    for name, contenders in MUST_COMPLETE.items():
        jobs, runs = _result(quick, name)["jobs"], _runs(quick, name)
        for contender in contenders:
            run = runs[contender]
            assert (run["succeeded"], run["failed"], run["lost"]) == (jobs, 0, 0), (name, run)
            assert run["exit_code"] == 0
            assert len(run["completions_s"]) == jobs


def test_every_run_has_sane_figures(quick: Path) -> None:
    for name in SCENARIOS:
        jobs = _result(quick, name)["jobs"]
        for contender, run in _runs(quick, name).items():
            assert not any(key.startswith("no report") for key in run["errors"]), run["errors"]
            assert run["succeeded"] + run["failed"] == jobs, (name, contender)
            assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_rss_mb"] > 0
            assert run["completions_s"] == sorted(run["completions_s"])
            assert len(run["completions_s"]) == run["succeeded"]


def test_server_counted_the_requests(quick: Path) -> None:
    for name in SCENARIOS:
        for contender, run in _runs(quick, name).items():
            server = run["server"]
            assert {"requests", "submissions", "uploads", "image_downloads"} <= server.keys()
            if run["succeeded"]:
                assert server["submissions"] >= run["succeeded"], (name, contender)
                assert server["image_downloads"] >= run["succeeded"], (name, contender)
                assert sum(server["requests"]["result"].values()) >= run["succeeded"]
            assert server["unexpected_auth"] == 0, (name, contender)


def test_this_package_submits_each_job_once_and_uploads_each_file_once(quick: Path) -> None:
    result = _result(quick, "throughput")
    server = _runs(quick, "throughput")["novita-async"]["server"]
    assert server["submissions"] == result["jobs"]
    assert server["duplicate_submissions"] == 0
    faces, refs = SCENARIOS["throughput"].faces, SCENARIOS["throughput"].refs
    used = min(result["jobs"], faces) + min(refs, -(-result["jobs"] // faces))
    assert server["uploads"] == used


def test_faults_were_injected_and_rate_limit_enforced(quick: Path) -> None:
    for run in _runs(quick, "faults").values():
        assert sum(run["server"]["faults"].values()) > 0
    runs = _runs(quick, "rate-limited")
    # The others submit everything at once, without retries: the limit bites and costs jobs.
    assert sum(run["server"]["rate_limited"] for run in runs.values()) > 0
    for contender in ("naive-asyncio", "floor"):
        assert runs[contender]["lost"] == runs[contender]["server"]["rate_limited"]


def test_polling_spreads_task_times(quick: Path) -> None:
    command = _result(quick, "polling")["emulator"]
    assert "--step-seconds" in command
    assert float(command[command.index("--step-seconds") + 1]) > 0


def test_big_image_reports_memory_growth(quick: Path) -> None:
    figures = _runs(quick, "big-image")["novita-async"]["figures"]
    assert figures["image_mb"] == 64
    assert figures["peak_during_mb"] >= figures["rss_before_mb"] > 0
    assert figures["rss_growth_mb"] == pytest.approx(
        figures["peak_during_mb"] - figures["rss_before_mb"], abs=0.11
    )


def test_table_and_plots_are_written(quick: Path) -> None:
    table = (quick / "BENCHMARKS.md").read_text()
    assert "Quick run" in table
    for name, scenario in SCENARIOS.items():
        assert f"## {name}\n" in table
        if _has_matplotlib():
            assert (quick / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        for contender in scenario.contenders:
            if contender != "official-sdk" or not sdk_unusable():
                assert f"| {contender} |" in table
    assert "peak RSS at 100k jobs / at 10k jobs" in table
    assert "RSS growth during the download" in table
    assert "polls per task" in table


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@given(
    fastest=st.floats(0.01, 10),
    extra=st.floats(0.01, 100),
    fewest=st.integers(1, 50),
    more=st.integers(1, 50),
)
def test_step_seconds_map_the_steps_range_onto_the_spread(
    fastest: float, extra: float, fewest: int, more: int
) -> None:
    slowest, most = fastest + extra, fewest + more
    assume(abs(most * fastest - fewest * slowest) > 1e-6)  # not on the edge of possible
    if most * fastest < fewest * slowest:  # too few steps to stretch tasks that far
        with pytest.raises(ValueError, match="cannot spread"):
            Scenario(
                "s", "", 1, 1, 1, 0.0, steps_range=(fewest, most), spread_seconds=(fastest, slowest)
            )
        return
    scenario = Scenario(
        name="s",
        description="",
        jobs=1,
        quick_jobs=1,
        concurrency=1,
        task_seconds=0.0,
        steps_range=(fewest, most),
        spread_seconds=(fastest, slowest),
    )
    megapixels = scenario.width * scenario.height / 1_000_000

    def task_time(steps: int) -> float:
        # The emulator's duration: base + step_seconds * steps * megapixels * image_num.
        return scenario.base_seconds() + scenario.step_seconds() * steps * megapixels

    assert scenario.base_seconds() >= 0
    assert task_time(fewest) == pytest.approx(fastest, abs=1e-6)
    assert task_time(most) == pytest.approx(slowest)


def test_polling_scenario_spans_2_to_20_seconds() -> None:
    polling = SCENARIOS["polling"]
    assert polling.steps_range is not None
    megapixels = polling.width * polling.height / 1_000_000
    times = [
        polling.base_seconds() + polling.step_seconds() * steps * megapixels
        for steps in polling.steps_range
    ]
    assert times == [pytest.approx(2.0), pytest.approx(20.0)]


@given(jobs=st.integers(1, 300), low=st.integers(1, 60), span=st.integers(0, 60))
def test_steps_per_job_stay_in_range_and_spread(jobs: int, low: int, span: int) -> None:
    spec = RunSpec(
        jobs=jobs, faces=[], refs=[], out_dir="", concurrency=1, steps_range=(low, low + span)
    )
    steps = [spec.steps_for(i) for i in range(jobs)]
    assert all(low <= s <= low + span for s in steps)
    if jobs >= 2 * (span + 1):  # enough jobs: both ends of the range come up
        assert min(steps) == low and max(steps) == low + span


@pytest.mark.parametrize(
    ("versions", "reason"),
    [
        ({"novita-client": "0.7.1", "dataclass-wizard": "0.39.1"}, None),
        ({"novita-client": "0.7.1", "dataclass-wizard": "1.0.0"}, "dataclass-wizard 1.0.0"),
        ({"dataclass-wizard": "0.39.1"}, "novita-client is not installed"),
    ],
)
def test_sdk_contender_runs_only_where_the_sdk_can_parse_answers(
    monkeypatch: pytest.MonkeyPatch, versions: dict[str, str], reason: str | None
) -> None:
    from importlib import metadata

    def version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)
    why = sdk_unusable()
    assert why is None if reason is None else why is not None and reason in why


def test_a_repeated_contender_is_reported_by_its_median_cpu_run() -> None:
    from benchmarks.run import _median_run

    runs = [
        {"contender": "floor", "cpu_s": cpu, "wall_s": 10.0 + n, "succeeded": 5}
        for n, cpu in enumerate([3.9, 3.1, 4.6, 3.3, 3.5])
    ]
    chosen = _median_run(runs)
    assert chosen["cpu_s"] == 3.5 and chosen["wall_s"] == 14.0
    assert [r["cpu_s"] for r in chosen["repeats"]] == [3.9, 3.1, 4.6, 3.3, 3.5]  # in run order
    assert _median_run(runs[:1]) is runs[0]  # a single run stays as it is
    assert SCENARIOS["throughput"].repeats > 1  # the CPU ratio is the one measured this way
    assert SCENARIOS["throughput"].scaled(True).repeats == 1  # quick runs stay quick
