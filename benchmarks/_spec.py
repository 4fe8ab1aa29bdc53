"""What a contender is asked to do, and what it reports back.

The harness writes a :class:`RunSpec` as JSON, starts the contender as its own process (so its CPU
and memory are its own), and reads one JSON :class:`RunReport` line from its stdout. Connection
settings come from the usual ``NOVITA_*`` environment variables, pointing at the emulator process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import cattrs

_converter = cattrs.Converter()
_GOLDEN = (5**0.5 - 1) / 2


@attrs.frozen
class RunSpec:
    jobs: int
    faces: list[str]
    refs: list[str]
    out_dir: str
    concurrency: int
    task_seconds_hint: float = 1.0
    rate: float | None = None
    width: int = 128
    height: int = 128
    steps: int = 20
    steps_range: tuple[int, int] | None = None
    """Inclusive bounds of a per-job ``steps``, spread over the jobs (None: ``steps`` for all)."""
    image_type: str = "jpeg"
    webhooks: bool = False
    """Learn each task's end by webhook (the contenders that can), polling only for lost events."""
    end_to_disk: bool = False
    """Report when each task's images were on disk (:attr:`RunReport.on_disk`)."""
    shards: int = 0
    """Ray shards to split the run among (the sharded contender; 0 elsewhere)."""
    masks: list[str] = attrs.Factory(list)
    """Inpainting masks, each the size of every face and ref (the mixed scenario)."""

    def steps_for(self, index: int) -> int:
        """The ``steps`` of job ``index``: spread evenly over ``steps_range`` for any number of
        jobs, long and short interleaved (golden-ratio sequence), the same for every contender."""
        if self.steps_range is None:
            return self.steps
        low, high = self.steps_range
        return low + int((index * _GOLDEN) % 1.0 * (high - low + 1))

    def job_inputs(self, jobs: int | None = None) -> Iterator[tuple[int, str, str]]:
        """(index, face path, ref path) for each job (or the first ``jobs``), cycling over
        faces x refs; lazily."""
        pairs = len(self.faces) * len(self.refs)
        for i in range(self.jobs if jobs is None else jobs):
            k = i % pairs
            yield i, self.faces[k % len(self.faces)], self.refs[k // len(self.faces)]

    def body(self, face_id: str, ref_id: str, index: int) -> dict[str, Any]:
        """A minimal valid request body, as a bare client would write it by hand."""
        return {
            "model_name": "sdxlUnstableDiffusers_v8HEAVENSWRATH_133813.safetensors",
            "face_image_assets_ids": [face_id],
            "ref_image_assets_ids": [ref_id],
            "prompt": f"benchmark job {index}",
            "width": self.width,
            "height": self.height,
            "image_num": 1,
            "steps": self.steps_for(index),
            "guidance_scale": 7.5,
            "sampler_name": "Euler",
            "seed": index,
            "extra": {"response_image_type": self.image_type},
        }


@attrs.define
class RunReport:
    succeeded: int = 0
    failed: int = 0
    completions: list[float] = attrs.Factory(list)  # wall-clock time.time() of each success
    errors: dict[str, int] = attrs.Factory(dict)
    figures: dict[str, float] = attrs.Factory(dict)  # a contender's own measurements, by name
    peak_rss_kib: int = 0
    """This process's peak resident set (``VmHWM``), filled in by :func:`emit`. Not the
    harness's ``ru_maxrss``: that one keeps the harness's own size from before ``exec``."""
    on_disk: dict[str, float] = attrs.Factory(dict)
    """Task id -> ``time.time()`` its job's images were all on disk, when the spec asks
    (``end_to_disk``): the harness compares them with the emulator's ends of the tasks, then
    keeps only percentiles."""

    def success(self) -> None:
        self.succeeded += 1
        self.completions.append(time.time())

    def saved(self, task_id: str) -> None:
        """The images of ``task_id``'s job are on disk now."""
        self.on_disk[task_id] = time.time()

    def failure(self, exc: BaseException | str) -> None:
        self.failed += 1
        key = exc if isinstance(exc, str) else type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


def load_spec() -> RunSpec:
    with open(sys.argv[1], encoding="utf-8") as f:
        return _converter.structure(json.load(f), RunSpec)


def dump_spec(spec: RunSpec, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_converter.unstructure(spec), f)


def status_kib(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` figure of this process in KiB, from /proc (0 where missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def emit(report: RunReport) -> None:
    report.peak_rss_kib = max(report.peak_rss_kib, status_kib("VmHWM"))
    sys.stdout.write("REPORT " + json.dumps(_converter.unstructure(report)) + "\n")
    sys.stdout.flush()


def parse_report(stdout: str) -> RunReport | None:
    for line in stdout.splitlines():
        if line.startswith("REPORT "):
            return _converter.structure(json.loads(line[7:]), RunReport)
    return None


def connection() -> tuple[str, str, str]:
    return (
        os.environ["NOVITA_BASE_URL"],
        os.environ["NOVITA_ASSETS_URL"],
        os.environ["NOVITA_API_KEY"],
    )
