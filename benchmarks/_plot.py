"""A plot per scenario: jobs done over time per contender (the median of its runs), with the
ideal line. Drawn from the result file alone, so the report can redraw it."""

from __future__ import annotations

import io
from pathlib import Path

from benchmarks._summary import ScenarioResult, median_progress, write_whole


def write_plot(result: ScenarioResult, path: Path) -> bool:
    """Draw ``result`` into ``path``; False, drawing nothing, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for contender in result.contenders:
        points = median_progress(contender.runs)
        runs = sum(run.progress is not None for run in contender.runs)
        label = contender.contender + (f" (median of {runs} runs)" if runs > 1 else "")
        done = [0, *(n for n, _ in points)]
        ax.step([0, *(t for _, t in points)], done, where="post", label=label)
    ax.plot([result.task_seconds, result.ideal_wall_s], [0, result.jobs], "k--", label="ideal")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("completed jobs")
    ax.set_title(f"{result.scenario} (N={result.jobs})")
    ax.legend()
    fig.tight_layout()
    picture = io.BytesIO()
    try:
        fig.savefig(picture, dpi=90, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    write_whole(path, picture.getvalue())
    return True
