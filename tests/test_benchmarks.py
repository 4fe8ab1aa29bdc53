"""The benchmark harness, end to end at ``--quick`` scale, so it cannot rot; and the report:
medians, ratios that count the same jobs, and BENCHMARKS.md as the committed results make it.

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
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the harness lives beside the package; plain `pytest` too
    sys.path.insert(0, str(ROOT))

from benchmarks._mixed import check_outputs, expected_routes, mixed_jobs  # noqa: E402
from benchmarks._report import render_markdown  # noqa: E402
from benchmarks._scenarios import (  # noqa: E402
    CONTENDERS,
    OBJECT_STORE,
    RAY_2,
    SCENARIOS,
    WEBHOOKS,
    WEBHOOKS_DROPPED,
    Scenario,
)
from benchmarks._spec import RunSpec  # noqa: E402
from benchmarks._summary import (  # noqa: E402
    PROGRESS_POINTS,
    ContenderResult,
    RunSummary,
    ScenarioResult,
    end_to_disk,
    load_result,
    load_results,
    median_progress,
    medians,
    progress,
)
from benchmarks._targets import cpu_vs_floor, scenario_checks, x_ideal  # noqa: E402
from benchmarks.contenders.sdk import usable as sdk_unusable  # noqa: E402
from benchmarks.run import BENCHMARKS_MD, RESULTS  # noqa: E402

# The quick run (every scenario, Ray's start-up included) takes its first test's time. It starts
# Ray: on the worker of the tests that do (see tests/ray/test_sharded_run.py).
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("bench")]

# Scenarios without injected faults, and which contenders must finish every job in each (the
# floor has no retries, so a rate limit costs it jobs by design).
MUST_COMPLETE = {
    "throughput": ("novita-async", "floor"),
    "rate-limited": ("novita-async",),
    "polling": ("novita-async", "floor"),
    "scale-10k": ("novita-async",),
    "scale-100k": ("novita-async",),
    "big-image": ("novita-async",),
    "webhooks": ("novita-async", WEBHOOKS, WEBHOOKS_DROPPED, "floor"),
    "scale-out": ("novita-async", OBJECT_STORE, RAY_2),
    "mixed": ("novita-async", "official-sdk"),
}


def _repo_files() -> dict[Path, bytes]:
    """What a quick run must leave alone: the repo's table, README and the full run's results."""
    paths = [ROOT / "BENCHMARKS.md", ROOT / "README.md", *RESULTS.glob("*.*")]
    return {path: path.read_bytes() for path in paths if path.is_file()}


# Over 20 s (about 50 s on a quiet 2-core machine): every scenario runs every contender once, each
# a fresh process against a fresh emulator process, and the scale-out scenario starts Ray for its
# shards. Fewer scenarios or contenders would leave parts of the harness untried; the job counts
# are already the smallest that show what the tests below check (faults, 429s, waves).
@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("bench-results")
    before = _repo_files()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=250,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert _repo_files() == before, "--quick wrote over the repo's benchmark files"
    return results


def _result(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return data


def _runs(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """Each contender's run (a quick run runs each contender once)."""
    contenders = _result(folder, name)["contenders"]
    assert all(len(c["runs"]) == 1 for c in contenders)
    return {c["contender"]: c["runs"][0] for c in contenders}


def test_every_scenario_ran_every_available_contender(quick: Path) -> None:
    for name, scenario in SCENARIOS.items():
        result = _result(quick, name)
        assert result["quick"] is True
        assert result["jobs"] == scenario.quick_jobs
        expected = set(scenario.scaled(quick=True).contenders)
        if sdk_unusable():
            expected.discard("official-sdk")
        assert set(_runs(quick, name)) == expected, name


def test_fault_free_scenarios_complete_every_job(quick: Path) -> None:
    for name, contenders in MUST_COMPLETE.items():
        jobs, runs = _result(quick, name)["jobs"], _runs(quick, name)
        for contender in contenders:
            if contender == "official-sdk" and sdk_unusable():
                continue
            run = runs[contender]
            assert (run["succeeded"], run["failed"]) == (jobs, 0), (name, run)
            assert run["exit_code"] == 0
            assert run["progress"][-1][0] == jobs


def test_every_run_has_sane_figures(quick: Path) -> None:
    for name in SCENARIOS:
        jobs = _result(quick, name)["jobs"]
        for contender, run in _runs(quick, name).items():
            assert not any(key.startswith("no report") for key in run["errors"]), run["errors"]
            assert run["succeeded"] + run["failed"] == jobs, (name, contender)
            assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_rss_mb"] > 0
            done = [n for n, _ in run["progress"]]
            assert done == sorted(set(done))
            assert [t for _, t in run["progress"]] == sorted(t for _, t in run["progress"])
            step = -(-jobs // PROGRESS_POINTS)  # the jobs between two points of progress
            assert (done[-1] if done else 0) <= run["succeeded"] < (done[-1] if done else 0) + step


def test_server_counted_the_requests(quick: Path) -> None:
    for name in SCENARIOS:
        for contender, run in _runs(quick, name).items():
            server = run["server"]
            assert {"requests", "submissions", "uploads", "image_downloads"} <= server.keys()
            if run["succeeded"]:
                assert server["submissions"] >= run["succeeded"], (name, contender)
                assert server["image_downloads"] >= run["succeeded"], (name, contender)
                polls = sum(server["requests"].get("result", {}).values())
                # Told of an end by webhook, a task needs no poll. Events attempted, not
                # delivered: the emulator counts a delivery once it has read the answer, which
                # may be after the contender acted on the event and exited.
                told = server["webhooks"]["attempted"] if CONTENDERS[contender].webhooks else 0
                assert polls + told >= run["succeeded"], (name, contender)
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
        lost = _result(quick, "rate-limited")["jobs"] - runs[contender]["succeeded"]
        assert lost == runs[contender]["server"]["rate_limited"]


def test_polling_spreads_task_times(quick: Path) -> None:
    command = _result(quick, "polling")["emulator"]
    assert "--step-seconds" in command
    assert float(command[command.index("--step-seconds") + 1]) > 0


def test_webhook_contenders_are_told_of_every_end_and_poll_for_the_lost_ones(quick: Path) -> None:
    jobs, runs = _result(quick, "webhooks")["jobs"], _runs(quick, "webhooks")
    for contender, run in runs.items():
        webhooks, polls = run["server"]["webhooks"], run["server"]["requests"].get("result", {})
        # Every task of a webhook contender asked for an event; no other contender's did.
        assert webhooks["events"] == (jobs if CONTENDERS[contender].webhooks else 0), contender
        assert run["server"]["duplicate_submissions"] == 0
        if contender == WEBHOOKS_DROPPED:
            # A lost event is never a stuck job: its task is polled (the job ended: see above).
            assert sum(polls.values()) >= webhooks["dropped"]
        else:
            assert webhooks["dropped"] == 0
    emulator_args = {
        c["contender"]: c["emulator_args"] for c in _result(quick, "webhooks")["contenders"]
    }
    assert emulator_args[WEBHOOKS_DROPPED] == ["--webhook-faults", "drop=0.1"]
    assert emulator_args[WEBHOOKS] == emulator_args["novita-async"] == []


def test_webhooks_scenario_measures_each_end_to_disk_and_keeps_only_percentiles(
    quick: Path,
) -> None:
    for contender, run in _runs(quick, "webhooks").items():
        figures = run["figures"]
        assert set(figures) == {"end_to_disk_p50_ms", "end_to_disk_p95_ms", "end_to_disk_jobs"}
        # Every job's end matched to its task's end in the emulator, which came first.
        assert figures["end_to_disk_jobs"] == run["succeeded"], contender
        assert 0 <= figures["end_to_disk_p50_ms"] <= figures["end_to_disk_p95_ms"], contender
    for name in SCENARIOS:  # the other scenarios do not pay for the measure
        if not SCENARIOS[name].end_to_disk:
            for run in _runs(quick, name).values():
                assert not any(key.startswith("end_to_disk") for key in run["figures"])


def test_end_to_disk_percentiles_are_nearest_rank_over_the_tasks_both_saw() -> None:
    ends = {f"t{k}": 1000.0 + k for k in range(1, 101)}
    on_disk = {task: end + int(task[1:]) / 1000 for task, end in ends.items()}  # 1..100 ms late
    on_disk["never-ended"] = 2000.0  # no end in the emulator: not counted
    figures = end_to_disk(on_disk, ends)
    assert figures == {
        "end_to_disk_p50_ms": pytest.approx(50, abs=0.1),
        "end_to_disk_p95_ms": pytest.approx(95, abs=0.1),
        "end_to_disk_jobs": 100,
    }
    assert end_to_disk({"t1": 1001.25}, {"t1": 1001.0}) == {
        "end_to_disk_p50_ms": 250.0,
        "end_to_disk_p95_ms": 250.0,
        "end_to_disk_jobs": 1,
    }
    assert end_to_disk({}, ends) == {}


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
        for contender in scenario.scaled(quick=True).contenders:
            if contender != "official-sdk" or not sdk_unusable():
                assert f"| {contender} |" in table
    assert "peak RSS at 100k jobs / at 10k jobs" in table
    assert "RSS growth during the download" in table
    assert "polls per task" in table
    assert "| contender | requests/job, uploads aside | polls/task | webhook events |" in table
    assert "task's end to its image on disk with webhooks, p95" in table
    assert "failed jobs with 10% of the events dropped" in table
    assert "| contender | images right / expected | images/s | CPU ms/image |" in table
    assert "unknown fields sent, worst run" in table


def test_mixed_tasks_reach_each_endpoint_once_with_images_of_their_sizes(quick: Path) -> None:
    result, runs = _result(quick, "mixed"), _runs(quick, "mixed")
    spec = RunSpec(
        jobs=result["jobs"], faces=[f"f{k}" for k in range(40)], refs=["r"], masks=["m"],
        out_dir="", concurrency=1,
    )  # fmt: skip
    wanted = expected_routes(spec)
    # A quick run's 20 jobs: the cycle of ten twice, its first job (txt2img) of two images.
    assert wanted == {"txt2img": 8, "img2img": 6, "inpainting": 2, "upscale": 2, "submit": 2}
    for contender, run in runs.items():
        server, figures = run["server"], run["figures"]
        assert server["submissions_by_route"] == wanted, contender
        assert server["duplicate_submissions"] == 0, contender
        assert figures["images_expected"] == figures["images_right"] == 21, contender
        assert figures["images_wrong"] == figures["routes_off"] == 0, contender
        assert figures["images_per_s"] > 0
    ours = runs["novita-async"]
    assert ours["server"]["unknown_fields"] == {} and ours["figures"]["unknown_fields"] == 0
    if "official-sdk" in runs:
        # The SDK nests a stray "extra" in img2img's request: the count that would catch ours.
        sdk = runs["official-sdk"]["server"]["unknown_fields"]
        assert sdk == {"img2img": {"request.extra": 6}}


def test_mixed_check_counts_missing_and_wrongly_sized_images_and_misrouted_jobs(
    tmp_path: Path,
) -> None:
    spec = RunSpec(
        jobs=10, faces=["f"], refs=["r"], masks=["m"], out_dir=str(tmp_path), concurrency=1
    )
    jobs = list(mixed_jobs(spec))
    for job in jobs:
        for n in range(job.image_num):
            Image.new("RGB", (job.width, job.height)).save(tmp_path / f"{job.id}_{n}.jpeg")
    server = {"submissions_by_route": expected_routes(spec), "unknown_fields": {}}
    assert check_outputs(spec, server) == {
        "images_expected": 11, "images_right": 11, "images_wrong": 0, "routes_off": 0,
        "unknown_fields": 0,
    }  # fmt: skip
    (tmp_path / "0_1.jpeg").unlink()  # job 0 is txt2img, of two images: one is missing
    upscale = next(job for job in jobs if job.task == "upscale")
    Image.new("RGB", (upscale.width + 1, upscale.height)).save(tmp_path / f"{upscale.id}_0.jpeg")
    server = {
        "submissions_by_route": {**expected_routes(spec), "txt2img": 5, "img2img": 2},
        "unknown_fields": {"img2img": {"request.cfg_scale": 2, "extra.foo": 1}},
    }
    figures = check_outputs(spec, server)
    assert (figures["images_right"], figures["images_wrong"]) == (9, 2)
    assert (figures["routes_off"], figures["unknown_fields"]) == (2, 3)
    assert check_outputs(spec, None).keys() == {"images_expected", "images_right", "images_wrong"}


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


def _run(
    cpu: float, wall: float, succeeded: int = 5, rss: float = 40.0, polls: int = 5
) -> RunSummary:
    server = {
        "requests": {"submit": {"200": succeeded}, "result": {"200": polls}},
        "submissions": 5,
    }
    return RunSummary(
        wall_s=wall, cpu_s=cpu, succeeded=succeeded, failed=5 - succeeded, peak_rss_mb=rss,
        server=server, progress=progress([wall] * succeeded, 5),
    )  # fmt: skip


def _scenario(*contenders: tuple[str, list[RunSummary]]) -> ScenarioResult:
    return ScenarioResult(
        scenario="throughput", description="", jobs=5, concurrency=5, task_seconds=1.0, rate=None,
        ideal_wall_s=10.0, emulator=[], command="", machine="", date="", run="",
        contenders=[ContenderResult(name, runs) for name, runs in contenders],
    )  # fmt: skip


def test_each_figure_is_the_median_of_its_own_values() -> None:
    runs = [
        _run(cpu, wall, rss=rss, polls=polls)
        for cpu, wall, rss, polls in [
            (3.9, 10.0, 44.0, 9), (3.1, 11.0, 40.0, 5), (4.6, 12.0, 41.0, 6), (3.3, 13.0, 43.0, 8),
            (3.5, 14.0, 42.0, 7),
        ]
    ]  # fmt: skip
    figures = medians(ContenderResult("floor", runs), jobs=5)
    # The run with the median CPU (3.5) took 14 s, used 42 MB and polled 7 times: none of that
    # is the median of its own figure.
    assert figures["cpu_s"] == 3.5 and figures["cpu_ms_per_job"] == pytest.approx(700)
    assert figures["wall_s"] == 12.0
    assert figures["peak_rss_mb"] == 42.0
    assert figures["polls_per_task"] == pytest.approx(7 / 5)
    assert (figures.runs, figures.detailed, figures.complete) == (5, 5, True)
    assert SCENARIOS["throughput"].repeats > 1  # the CPU ratio is the one measured this way
    assert SCENARIOS["throughput"].scaled(True).repeats == 1  # quick runs stay quick


def test_a_ratio_counts_the_same_jobs_on_both_sides() -> None:
    ours = [_run(2.0, 11.0), _run(2.2, 11.5), _run(2.4, 12.0)]
    floor = [_run(1.6, 11.0), _run(1.8, 11.0), _run(2.0, 11.0)]
    result = _scenario(("novita-async", ours), ("floor", floor))
    ours_m = medians(result.contenders[0], 5)
    assert cpu_vs_floor(result, ours_m) == pytest.approx(2.2 / 1.8)
    assert x_ideal(result, ours_m) == pytest.approx(1.15)
    # One floor run lost a job: its CPU went on four jobs, ours on five, so no CPU ratio is made
    # (the floor's median run did every job, but the medians would still mix counts).
    lossy = _scenario(("novita-async", ours), ("floor", [*floor[:2], _run(0.5, 3.0, succeeded=4)]))
    assert cpu_vs_floor(lossy, medians(lossy.contenders[0], 5)) is None
    # A run of ours that lost a job: neither its wall time against the ideal nor its CPU.
    short = _scenario(("novita-async", [*ours[:2], _run(2.4, 5.0, succeeded=4)]), ("floor", floor))
    short_m = medians(short.contenders[0], 5)
    assert x_ideal(short, short_m) is None and cpu_vs_floor(short, short_m) is None
    # CPU per job counts the jobs the CPU was spent on: all those given, done or lost.
    assert short_m["cpu_ms_per_job"] == pytest.approx(1000 * 2.2 / 5)
    assert short_m["lost"] == 0 and short_m["succeeded"] == 5


@pytest.mark.parametrize(("ours_cpu", "met"), [(2.9, True), (3.0, True), (3.1, False)])
def test_cpu_target_is_one_and_a_half_times_the_floor(ours_cpu: float, met: bool) -> None:
    result = _scenario(("novita-async", [_run(ours_cpu, 11.0)]), ("floor", [_run(2.0, 11.0)]))
    (check,) = [c for c in scenario_checks(result) if c.what == "CPU per job / the floor's"]
    assert (check.limit, check.met) == (1.5, met)


def _webhook_run(polls: int, p95: float, wall: float, succeeded: int = 10) -> RunSummary:
    """A run of 10 jobs: a submission and a download each, ``polls`` polls, 3 uploads."""
    requests = {"upload": 3, "submit": 10, "image": succeeded, "result": polls}
    server = {
        "requests": {route: {"200": n} for route, n in requests.items()},
        "submissions": 10,
        "webhooks": {"events": 10, "dropped": 1},
    }
    figures = {"end_to_disk_p50_ms": p95 / 2, "end_to_disk_p95_ms": p95, "end_to_disk_jobs": 10}
    return RunSummary(wall, 1.0, succeeded, 10 - succeeded, server=server, figures=figures)


@pytest.mark.parametrize(
    ("polls", "p95", "wall", "met"),
    [
        (1, 49.9, 10.5, (True, True, True)),  # 2.1 requests per job, uploads aside
        (2, 50.0, 10.6, (False, False, False)),  # 2.2; p95 must be under 50 ms
    ],
)
def test_webhook_targets_are_requests_end_to_disk_and_wall(
    polls: int, p95: float, wall: float, met: tuple[bool, ...]
) -> None:
    result = ScenarioResult(
        scenario="webhooks", description="", jobs=10, concurrency=10, task_seconds=1.0, rate=None,
        ideal_wall_s=10.0, emulator=[], command="", machine="", date="", run="",
        contenders=[
            ContenderResult(WEBHOOKS, [_webhook_run(polls, p95, wall)] * 3),
            ContenderResult(WEBHOOKS_DROPPED, [_webhook_run(polls, p95, wall, succeeded=9)]),
        ],
    )  # fmt: skip
    *hooks, dropped = scenario_checks(result)
    assert [c.what for c in hooks] == [
        "HTTP requests per job with webhooks, uploads aside",
        "task's end to its image on disk with webhooks, p95",
        "wall / ideal with webhooks",
    ]
    assert tuple(c.met for c in hooks) == met
    # A job lost with events dropped is a missed target, whatever else.
    assert (dropped.what, dropped.value, dropped.met) == (
        "failed jobs with 10% of the events dropped",
        1,
        False,
    )
    table = render_markdown([result])
    # 10 submissions, 9 downloads, the polls, over 10 jobs; each poll for the one event lost.
    per_job, per_task = f"{(19 + polls) / 10:.2f}", f"{polls / 10:.2f}"
    assert f"| {WEBHOOKS_DROPPED} | {per_job} | {per_task} | 10 | 1 | {polls:.2f} |" in table


def test_progress_is_a_hundred_points_at_most_and_medians_are_per_level() -> None:
    points = progress([0.001 * k for k in range(100_000, 0, -1)], 100_000)
    assert len(points) == PROGRESS_POINTS
    assert points[0] == (1000, 1.0) and points[-1] == (100_000, 100.0)
    assert progress([0.5, 0.2], 3) == [(1, 0.2), (2, 0.5)]  # 3 jobs, 2 done
    runs = [
        RunSummary(1, 1, 2, 1, progress=[(1, 0.1), (2, 0.4)]),
        RunSummary(1, 1, 3, 0, progress=[(1, 0.3), (2, 0.5), (3, 0.9)]),
        RunSummary(1, 1, 3, 0, progress=[(1, 0.2), (2, 0.6), (3, 0.7)]),
        RunSummary(1, 1, 3, 0, progress=None),  # not recorded: left out
    ]
    # Level 3: reached at 0.7 and 0.9, never in the first run: the median is 0.9.
    assert median_progress(runs) == [(1, 0.2), (2, 0.5), (3, 0.9)]
    assert median_progress(runs[:1] + runs[3:]) == [(1, 0.1), (2, 0.4)]


def test_committed_results_are_summaries_and_the_table_is_written_from_them() -> None:
    names = sorted(path.stem for path in RESULTS.glob("*.json"))
    assert names == sorted(SCENARIOS)
    for name in names:
        result = load_result(RESULTS / f"{name}.json")  # refuses keys of another format
        assert result.quick is False and result.scenario == name
        for contender in result.contenders:
            for run in contender.runs:
                assert run.progress is None or len(run.progress) <= PROGRESS_POINTS
    table = render_markdown(load_results(RESULTS, list(SCENARIOS), quick=False))
    assert BENCHMARKS_MD.read_text(encoding="utf-8") == table, (
        "BENCHMARKS.md is not what the results make: python -m benchmarks.run --report"
    )
