"""Each program in examples/ runs to completion against the emulator it starts itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web_handler.py", "200 {'task_id'"),
        ("webhook_app.py", "'by': 'webhook'"),
        ("bulk_jsonl.py", "9 succeeded, 0 failed"),
        ("streaming_pipeline.py", "6/6 images post-processed"),
    ],
)
def test_example_runs_against_the_emulator(name: str, expected: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVITA_")}
    out = tmp_path / "out"
    args = [str(out)] if name == "streaming_pipeline.py" else []
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert "Traceback" not in done.stderr
    if args:  # each image was post-processed as it landed
        assert len(list(out.glob("p*_0-thumb.png"))) == 6
