"""docs/scale-out.md's figures, written from the result files between its markers (never typed by
hand): what one process sustains per core, and the ``scale-out`` scenario's one process against
an object-store output and 2 and 4 Ray shards."""

from __future__ import annotations

from benchmarks._readme import block_of, with_block
from benchmarks._scenarios import OBJECT_STORE, RAY_2, RAY_4
from benchmarks._summary import ScenarioResult
from benchmarks._targets import OURS, medians_of, x_ideal

START, END = "<!-- bench:scale-out:start -->", "<!-- bench:scale-out:end -->"


def with_scale_out_figures(doc: str, results: list[ScenarioResult]) -> str:
    """``doc`` with the text between its markers written from ``results``."""
    return with_block(doc, START, END, scale_out_figures(results))


def scale_out_block(doc: str) -> str:
    """The text between the page's markers, as :func:`with_scale_out_figures` writes it."""
    return block_of(doc, START, END)


def scale_out_figures(results: list[ScenarioResult]) -> str:
    by_name = {result.scenario: result for result in results}
    lines: list[str] = []
    throughput = by_name.get("throughput")
    ours = medians_of(throughput, OURS) if throughput else None
    if throughput is not None and ours is not None and (cpu := ours["cpu_ms_per_job"]):
        lines.append(
            f"- **One process, one core** (`throughput`, {throughput.date}): {cpu:.2f} ms of CPU"
            f" per job, everything included, so about {1000 / cpu:,.0f} jobs per second per core"
            " if nothing else bound it."
        )
    scale = by_name.get("scale-out")
    if scale is None:
        lines.append(
            "- `scale-out`: not run yet (`python -m benchmarks.run --scenario scale-out`)."
        )
        return "\n".join(lines)
    lines += [
        f"- **`scale-out`** ({scale.date}; {scale.description}; ideal wall"
        f" {scale.ideal_wall_s:g} s; each figure the median of the runs):",
        "",
        "| contender | runs | wall s | x ideal | 429s | requests/job | client CPU s |"
        " Ray start s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for contender in scale.contenders:
        m = medians_of(scale, contender.contender)
        assert m is not None
        ratio = x_ideal(scale, m)
        # The contender's own CPU: Ray's processes included, the local S3 server's left out.
        cpu = m.own.get("ray_cpu_s", m.own.get("own_cpu_s", m["cpu_s"]))
        cells = [
            contender.contender,
            str(m.runs),
            _num(m["wall_s"], 1),
            _num(ratio, 2),
            _num(m["refused_429"], 0),
            _num(m["requests_per_job"], 2),
            _num(cpu, 1),
            _num(m.own.get("ray_start_s"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    store = medians_of(scale, OBJECT_STORE)
    if store is not None and store.own:
        own = store.own
        lines += [
            "",
            f"- **The object-store journal** (`{OBJECT_STORE}`, moto's S3 server on loopback):"
            f" {own.get('journal_puts_per_task', 0):.2f} journal PUTs per task (group-committed"
            f" segments, compaction included) and {own.get('image_puts_per_task', 0):.2f} image"
            " PUTs per task; a submission waited for its intent to be in the bucket"
            f" {own.get('durable_p50_ms', 0):.1f} ms at the median,"
            f" {own.get('durable_p95_ms', 0):.1f} ms at the 95th percentile.",
        ]
    two, four = medians_of(scale, RAY_2), medians_of(scale, RAY_4)
    if two is not None and four is not None:
        lines += [
            "",
            "`client CPU s`: the shards' counts every process of the local Ray instance (its"
            " servers and the shard workers), read just before it shut down; the object-store"
            " contender's leaves out the S3 server's.",
        ]
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"
