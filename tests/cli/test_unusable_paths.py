"""``run`` with an output, journal or report path this machine cannot use as such (a file where a
folder belongs, a folder where a file belongs): a usage error, exit 2, one line naming the flag,
before anything is uploaded or submitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import EmulatorProcess, cli
from .test_run import job, write_jobs

SMALL = ("--width", "128", "--height", "128", "--no-progress")


def a_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("kept\n")
    return path


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize(
    ("flag", "where", "why"),
    [
        ("--out", lambda t: a_file(t / "out"), "must be a folder (it names a file)"),
        ("--out", lambda t: a_file(t / "file") / "out", "file is a file, not a folder"),
        ("--journal", lambda t: t / "state", "must be a file (it names a folder)"),
        ("--journal", lambda t: a_file(t / "file") / "j.jsonl", "file is a file, not a folder"),
        ("--summary-json", lambda t: t / "state", "must be a file in an existing folder"),
    ],
    ids=["out-file", "out-under-file", "journal-folder", "journal-under-file", "summary-folder"],
)
def test_a_path_of_the_wrong_kind_is_a_usage_error_before_anything_is_sent(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess, flag: str, where: object,
    why: str, dry: bool,
) -> None:  # fmt: skip
    jobs = write_jobs(tmp_path, [job("ada", "beach", id="a")])
    (tmp_path / "state").mkdir()
    assert callable(where)
    path = where(tmp_path)
    args = ["--out", str(path)]
    if flag != "--out":
        args = ["--out", str(tmp_path / "o"), flag, str(path)]
    before = emulator.stats()
    done = cli("run", str(jobs), *args, *SMALL, *(["--dry-run"] if dry else []), env=emulator.env)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    (line,) = done.stderr.splitlines()
    assert flag in line and str(path) in line and why in line, line
    assert "Traceback" not in said and "LOCAL_IO_ERROR" not in said
    after = emulator.stats()
    assert (after["requests"], after["uploads"], after["submissions"]) == (
        before["requests"], before["uploads"], before["submissions"],
    )  # fmt: skip
    for name in ("out", "file"):
        if (tmp_path / name).is_file():
            assert (tmp_path / name).read_text() == "kept\n"
