"""Chaos at CI scale: a few hundred jobs through every fault at once, an outage window of refused
connections and an account error that stops the run, then a plain rerun (see ``chaos.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .chaos import (
    INJECTED_TASK_FAILURE,
    SUBMIT_UNKNOWN,
    figures,
    run_chaos,
    verify,
    write_inputs,
)
from .checks import API_KEY, SIGNATURE_MARK, LeakWatch, snapshot
from .incidents import ACCOUNT_REASON, Incidents

JOBS = 300
# Connections refused for 3 s once 60 tasks exist; the balance runs out once 200 tasks exist.
INCIDENTS = Incidents(outage_seconds=3.0, outage_after=60, account_after=200)


@pytest.mark.parametrize("seed", [7])
async def test_a_chaos_run_loses_nothing_pays_nothing_twice_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # anything written relative to the working directory shows up here
    inputs = write_inputs(tmp_path / "inputs")
    out = tmp_path / "out"
    before = snapshot(tmp_path)

    with LeakWatch(API_KEY, SIGNATURE_MARK) as logs:
        run = await run_chaos(out, inputs, jobs=JOBS, seed=seed, incidents=INCIDENTS)
    problems = verify(run)
    summary = figures(run)

    assert problems == [], summary
    assert logs.leaks == []
    assert logs.records > JOBS  # DEBUG really was captured: one line per request at least
    # The faults really happened, and the run still got through.
    faults = run.stats.faults
    for name in (
        "error_5xx",
        "html_5xx",
        "rate_429",
        "reset_before",
        "reset_after",
        "truncate",
        "expire",
    ):
        assert faults.get(name, 0) > 0, (name, faults)
    assert run.categories[INJECTED_TASK_FAILURE] > 0
    assert run.categories[SUBMIT_UNKNOWN] > 0
    assert summary["succeeded"] >= JOBS * 0.85, summary
    # The outage paused the run and failed nobody; the account stopped it; a plain rerun ended it.
    assert run.stats.outages == 1
    assert summary["jobs failed for the outage"] == 0
    first, rerun = run.parts
    assert first.stopped is not None and first.stopped.reason == ACCOUNT_REASON
    assert first.tasks_created == INCIDENTS.account_after
    assert summary["jobs recorded failed for the account"] == 0
    assert rerun.stopped is None and rerun.summary.not_finished == 0
    assert run.stats.duplicate_submissions == 0
    # Files only inside OUT: nothing new beside it, nothing in the working directory.
    after = snapshot(tmp_path, skip=out)
    assert after == before
    assert os.listdir(cwd) == []
