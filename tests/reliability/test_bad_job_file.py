"""A job file with bad lines: each fails alone, reported with its line number; the rest completes.

One ``novita-async run`` over a file mixing good lines with a broken JSON line, a missing image, a
folder where an image belongs, a text file named ``.png``, an out-of-range field, and ids that try
to leave the output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import Image

from .checks import API_KEY, leaks_in_folder, read_results, snapshot, tree_problems
from .crashes import EmulatorProcess

GOOD = {"face_images": ["face.png"], "ref_images": ["ref.png"], "width": 128, "height": 128}

# (line text, job id, words the report of the line must contain); None: a good line.
LINES: list[tuple[str, str, tuple[str, ...] | None]] = [
    (json.dumps({"id": "good1", "prompt": "first", **GOOD}), "good1", None),
    ('{"id": "broken", "prompt": ', "2", ("JSON",)),
    (
        json.dumps(
            {"id": "missing", "prompt": "b", "face_images": ["nope.png"], "ref_images": ["ref.png"]}
        ),
        "missing",
        ("nope.png",),
    ),
    (
        json.dumps(
            {
                "id": "folder",
                "prompt": "c",
                "face_images": ["folder.png"],
                "ref_images": ["ref.png"],
            }
        ),
        "folder",
        ("folder.png",),
    ),
    (
        json.dumps({"id": "text", "prompt": "d", **GOOD, "face_images": ["notes.png"]}),
        "text",
        ("notes.png",),
    ),
    (json.dumps({"id": "steps", "prompt": "e", **GOOD, "steps": 1000}), "steps", ("steps",)),
    (json.dumps({"id": "../escape", "prompt": "f", **GOOD}), "../escape", ("../escape",)),
    (json.dumps({"id": "nested/dir", "prompt": "g", **GOOD}), "nested/dir", ("nested/dir",)),
    (
        json.dumps({"id": "/tmp/absolute", "prompt": "h", **GOOD}),
        "/tmp/absolute",
        ("/tmp/absolute",),
    ),
    (json.dumps({"id": "..", "prompt": "i", **GOOD}), "..", ("..",)),
    (json.dumps({"id": "good2", "prompt": "last", **GOOD}), "good2", None),
]


@attrs.frozen
class BatchRun:
    root: Path
    out: Path
    code: int
    output: str
    rows: dict[str, dict[str, Any]]
    stats: dict[str, Any]
    outside_before: dict[str, int]
    outside_after: dict[str, int]


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchRun]:
    root = tmp_path_factory.mktemp("bad-job-file")
    Image.new("RGB", (16, 16), (10, 90, 10)).save(root / "face.png")
    Image.new("RGB", (16, 16), (90, 10, 10)).save(root / "ref.png")
    (root / "notes.png").write_text("not an image at all")
    (root / "folder.png").mkdir()
    (root / "jobs.jsonl").write_text("".join(text + "\n" for text, _, _ in LINES))
    out = root / "out"
    before = snapshot(root)
    emulator = EmulatorProcess("--seed", "5", "--task-seconds", "0", "--image-mode", "tiny")
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "novita_async",
                "run",
                "jobs.jsonl",
                "--out",
                str(out),
                "--no-progress",
                "--debug",
            ],
            cwd=root,
            env={**os.environ, **emulator.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        stats = emulator.stats()
    finally:
        assert emulator.close() == 0
    rows = {row["id"]: row for row in read_results(out)}
    yield BatchRun(
        root,
        out,
        done.returncode,
        done.stdout + done.stderr,
        rows,
        stats,
        before,
        snapshot(root, skip=out),
    )


def test_bad_lines_fail_alone_and_the_rest_of_the_batch_completes(bad_batch: BatchRun) -> None:
    assert bad_batch.code == 1, bad_batch.output  # some jobs failed
    assert sorted(bad_batch.rows) == sorted(job_id for _, job_id, _ in LINES)  # one line each
    for _, job_id, words in LINES:
        row = bad_batch.rows[job_id]
        if words is None:
            assert row["status"] == "succeeded", row
        else:
            assert row["status"] == "failed" and row["error"]["reason"], row
            assert row["task_id"] is None  # refused before anything was submitted
    assert bad_batch.stats["submissions"] == 2  # only the good lines reached the service
    assert tree_problems(bad_batch.out, list(bad_batch.rows.values())) == []
    # Nothing was created outside OUT: no "escape" beside it, no /tmp/absolute.
    assert bad_batch.outside_after == bad_batch.outside_before
    assert not Path("/tmp/absolute").exists()
    assert leaks_in_folder(bad_batch.out, API_KEY) == []
    assert API_KEY not in bad_batch.output


def test_each_bad_line_is_reported_with_its_line_number_and_cause(bad_batch: BatchRun) -> None:
    for number, (_, job_id, words) in enumerate(LINES, start=1):
        if words is None:
            continue
        message = bad_batch.rows[job_id]["error"]["message"]
        assert f"line {number}" in message, (job_id, message)
        assert all(word in message for word in words), (job_id, message)


def test_each_bad_line_is_named_by_its_line_number_on_the_terminal(bad_batch: BatchRun) -> None:
    # Lines the command itself cannot turn into jobs are reported with line number and field.
    for number, (_, job_id, words) in enumerate(LINES, start=1):
        if words is not None and job_id in ("2", "missing", "folder", "steps"):
            assert f"line {number}" in bad_batch.output, job_id
