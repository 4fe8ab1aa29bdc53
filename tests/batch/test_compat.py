"""A run folder written before issue 22's redesign (``data/compat``, made by
``data/make_compat_run.py``) still resumes: nothing is paid again, nothing is rewritten, and every
line of its journal and ``results.jsonl`` reads back and encodes to the very same bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

from novita_async.batch import BatchRunner, read_status
from novita_async.batch._journal import (
    JOURNAL_NAME,
    RESULTS_NAME,
    ResultLine,
    decode_record,
    encode_record,
)
from novita_async.testing import EmulatedNovita

from .data.make_compat_run import HERE, compat_jobs

JOURNAL = (HERE / "out" / JOURNAL_NAME).read_bytes()
RESULTS = (HERE / "out" / RESULTS_NAME).read_bytes()


def test_the_lines_of_an_earlier_version_encode_to_the_same_bytes() -> None:
    lines = JOURNAL.splitlines(keepends=True)
    kinds = [type(decode_record(line)).__name__ for line in lines]
    assert kinds.count("AssetRecord") == 2 and kinds.count("SucceededRecord") == 3
    assert kinds.count("FailedRecord") == 1
    assert [encode_record(decode_record(line)) for line in lines] == lines
    rows = RESULTS.splitlines(keepends=True)
    assert [ResultLine.decode(row).encode() for row in rows] == rows
    assert [ResultLine.decode(row).id for row in rows] == ["d", "a", "c", "b"]


async def test_a_rerun_of_an_earlier_version_s_folder_pays_nothing_and_rewrites_nothing(
    kit: EmulatedNovita, tmp_path: Path
) -> None:
    shutil.copytree(HERE, tmp_path, dirs_exist_ok=True)
    out = tmp_path / "out"
    summary = await BatchRunner(kit.client, out).run_all(compat_jobs(tmp_path / "inputs"))
    stats = kit.stats()
    assert (stats.submissions, stats.uploads, stats.image_downloads) == (0, 0, 0)
    assert (summary.succeeded, summary.failed, summary.replayed) == (3, 1, 4)
    assert summary.failures_by_reason == {"TASK_FAILED": 1}
    assert (out / JOURNAL_NAME).read_bytes() == JOURNAL
    assert (out / RESULTS_NAME).read_bytes() == RESULTS
    status = read_status(out, verify=True)
    assert (status.succeeded, status.failed, status.images, status.images_damaged) == (3, 1, 4, 0)
    assert status.unverifiable == 0 and status.results_listed == 4
