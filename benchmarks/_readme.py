"""The README's sentence of benchmark figures, written from the result files between the
README's markers: never typed by hand, so it cannot drift from what was measured."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable

from benchmarks._scenarios import WEBHOOKS, WEBHOOKS_DROPPED
from benchmarks._summary import Medians, ScenarioResult
from benchmarks._targets import OURS, SDK, cpu_vs_floor, medians_of, peak_rss, worst, x_ideal

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NAMES = {"official-sdk": "the official SDK", "naive-asyncio": "the naive loop"}


def with_block(text: str, start: str, end: str, block: str) -> str:
    """``text`` with what stands between its ``start`` and ``end`` markers replaced by ``block``."""
    before, found_start, rest = text.partition(start)
    _, found_end, after = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"no {start} ... {end} block to write the figures in")
    return f"{before}{start}\n{block}\n{end}{after}"


def block_of(text: str, start: str, end: str) -> str:
    """What stands between ``text``'s markers, as :func:`with_block` writes it."""
    return text.partition(start)[2].partition(end)[0].strip("\n")


def with_readme_figures(readme: str, results: list[ScenarioResult]) -> str:
    """``readme`` with the text between its markers written from ``results``."""
    return with_block(readme, START, END, readme_figures(results))


def readme_block(readme: str) -> str:
    """The text between the README's markers, as :func:`with_readme_figures` writes it."""
    return block_of(readme, START, END)


def readme_figures(results: list[ScenarioResult]) -> str:
    by_name = {result.scenario: result for result in results}
    dates = sorted({result.date for result in results})
    runs = len({(result.run, result.command) for result in results})
    source = "the last full run" if runs == 1 else f"{runs} runs of the harness"
    sentences = [
        f"From {source} ({', '.join(dates)}; each figure the median of a contender's runs,"
        " as in `BENCHMARKS.md`):"
    ]
    clauses = [
        _throughput(by_name.get("throughput")),
        _rate_limited(by_name.get("rate-limited")),
        _faults(by_name.get("faults")),
        _webhooks(by_name.get("webhooks")),
        _mixed(by_name.get("mixed")),
    ]
    sentences += [clause for clause in clauses if clause]
    small, large = peak_rss(results, "scale-10k"), peak_rss(results, "scale-100k")
    if small is not None and large is not None:
        sentences.append(
            f"Peak memory was {small:.1f} MB for 10,000 jobs and {large:.1f} MB for 100,000."
        )
    elapsed = [r.elapsed_s for r in results]
    if runs == 1 and None not in elapsed:
        minutes = sum(e for e in elapsed if e is not None) / 60
        sentences.append(f"The run took {minutes:.0f} minutes.")
    # A figure and its unit ("1.09 x", "97.3 %") stay on one line.
    text = re.sub(r"(\d) ([x%]|MB|ms)", "\\1\u00a0\\2", " ".join(sentences))
    return textwrap.fill(text, width=100, break_on_hyphens=False).replace("\u00a0", " ")


def _others(result: ScenarioResult, show: Callable[[Medians], str]) -> str:
    """`` (the official SDK <figure>, the naive loop <figure>)`` for the contenders that ran."""
    shown = [
        f"{label} {show(m)}"
        for name, label in NAMES.items()
        if (m := medians_of(result, name)) is not None
    ]
    return f" ({', '.join(shown)})" if shown else ""


def _throughput(result: ScenarioResult | None) -> str | None:
    ours = medians_of(result, OURS) if result else None
    if result is None or ours is None:
        return None
    text = f"on throughput this package finished {ours['succeeded']:,.0f} of {result.jobs:,} jobs"
    if (x := x_ideal(result, ours)) is not None:
        text += f" at {x:.2f} x the ideal wall time"
        if (floor := medians_of(result, "floor")) and (fx := x_ideal(result, floor)) is not None:
            text += f" (the bare-aiohttp floor: {fx:.2f} x)"
    text += f", with {ours['requests_per_job']:.2f} requests per job and"
    text += f" {ours['polls_per_task']:.2f} polls per task"
    if (cpu := cpu_vs_floor(result, ours)) is not None:
        text += f", for {cpu:.2f} x the floor's CPU per job"
    sdk = medians_of(result, "official-sdk")
    if sdk is not None and sdk.complete and ours.complete:
        text += f"; the official SDK took {_times(sdk, ours, 'wall_s')} x as long"
        if (sdk_cpu := cpu_vs_floor(result, sdk)) is not None:
            text += f" and {sdk_cpu:.1f} x the floor's CPU per job"
    return text + "."


def _times(a: Medians, b: Medians, figure: str) -> str:
    return f"{(a[figure] or 0) / (b[figure] or 1):.1f}"


def _rate_limited(result: ScenarioResult | None) -> str | None:
    ours = medians_of(result, OURS) if result else None
    if result is None or ours is None:
        return None
    return (
        f"Under a {result.rate:g}/s rate limit it lost {ours['lost']:.0f} of {result.jobs} jobs"
        + _others(result, lambda m: f"lost {m['lost']:.0f}")
        + "."
    )


def _faults(result: ScenarioResult | None) -> str | None:
    ours = medians_of(result, OURS) if result else None
    if result is None or ours is None:
        return None

    def share(m: Medians) -> str:
        return f"{100 * (m['succeeded'] or 0) / result.jobs:.1f} %"

    text = f"Under injected faults it completed {share(ours)} of the jobs" + _others(result, share)
    unknown = ours.errors.get("SUBMIT_OUTCOME_UNKNOWN", 0)
    if unknown:
        text += (
            f"; {unknown:g} of the {ours['lost']:.0f} it lost were submissions whose answer was"
            " lost, which it does not send twice (a second paid task is worse than a reported"
            " failure)"
        )
    return text + "."


def _webhooks(result: ScenarioResult | None) -> str | None:
    hooks = medians_of(result, WEBHOOKS) if result else None
    if result is None or hooks is None:
        return None

    def lag(m: Medians, p: int) -> str:
        value = m.own.get(f"end_to_disk_p{p}_ms")
        return "?" if value is None else f"{value:.0f}"

    polling = medians_of(result, OURS)
    text = (
        f"Told of each task's end by webhook ({result.jobs:,} jobs), it made"
        f" {hooks['task_requests_per_job']:.2f} requests per job besides uploads"
    )
    if polling is not None:
        text += f" (polling: {polling['task_requests_per_job']:.2f})"
    text += (
        f" and had an image on disk a median {lag(hooks, 50)} ms after its task ended,"
        f" {lag(hooks, 95)} ms at p95"
    )
    if polling is not None:
        text += f" (polling: {lag(polling, 50)} and {lag(polling, 95)} ms)"
    if (x := x_ideal(result, hooks)) is not None:
        text += f", at {x:.2f} x the ideal wall time"
    dropped = medians_of(result, WEBHOOKS_DROPPED)
    if dropped is not None:
        text += (
            f"; with 10 % of the events dropped it finished {dropped['succeeded']:,.0f} of"
            f" {result.jobs:,} jobs"
        )
        if (polls := dropped["polls_per_dropped_event"]) is not None:
            text += f", polling {polls:.2f} times per lost event"
    return text + "."


def _mixed(result: ScenarioResult | None) -> str | None:
    ours = medians_of(result, OURS) if result else None
    if result is None or ours is None:
        return None
    right, expected = ours.own.get("images_right"), ours.own.get("images_expected")
    text = (
        f"Mixing txt2img, img2img, inpainting, upscale and InstantID ({result.jobs:,} jobs), it"
        f" saved {right or 0:,.0f} of {expected or 0:,.0f} images at their task's size,"
        f" {ours.own.get('images_per_s', 0):.1f} a second"
    )
    if not worst(result, OURS, "routes_off") and not worst(result, OURS, "unknown_fields"):
        text += ", each endpoint receiving its jobs once and no field the API does not know"
    sdk = medians_of(result, SDK)
    if sdk is not None and sdk.complete and ours.complete:
        text += (
            f"; the official SDK's methods in a thread pool took {_times(sdk, ours, 'wall_s')} x"
            f" the wall time and {_times(sdk, ours, 'cpu_ms_per_job')} x the CPU per job, with"
            f" {sdk['requests_per_job']:.2f} requests per job against"
            f" {ours['requests_per_job']:.2f}"
        )
        if unknown := worst(result, SDK, "unknown_fields"):
            text += f", and sent a field the API does not know {unknown:,.0f} times"
    return text + "."
