"""The README's commands and code, run against an emulator process.

Fenced blocks are run by their info string:
- ``sh`` and ``sh long-running``, and every ``novita-async`` command of any block here or in
  ``docs/``: ``test_docs_commands.py``, each with the result the docs give it;
- ``sh benchmark``: the benchmark entry point must exist and answer ``--help`` (its ``--quick`` run
  is the benchmarks' own test); the figures between ``<!-- bench:start -->`` and
  ``<!-- bench:end -->`` must be those the benchmark report writes from the committed results;
- ``sh setup``: the two set-up commands, which CI runs itself; checked against ``.ci/run``;
- ``python``: each block runs as a script in the scratch folder (the pictures, a mask and the job
  files the README names);
- ``python pytest``: each block is a test file, run by pytest (the testing kit's plugin) there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli.conftest import EmulatorProcess, emulator_process
from PIL import Image

from benchmarks._readme import readme_block, readme_figures
from benchmarks._scale_out import scale_out_block, scale_out_figures
from benchmarks._scenarios import SCENARIOS
from benchmarks._summary import load_results
from benchmarks.run import RESULTS
from novita_async.emulator._images import SAMPLE_FACES, SAMPLE_SCENES, draw_face, draw_scene

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCKS = [(info.strip(), body) for info, body in BLOCK.findall(README)]


def blocks(info: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == info]


def test_setup_commands_are_the_two_of_the_issue_and_the_test_one_is_what_ci_runs() -> None:
    (setup,) = blocks("sh setup")
    demo, tests = setup.strip().splitlines()
    assert demo == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[emulator]' "
        "&& .venv/bin/novita-async demo"
    )
    assert tests == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' "
        "&& .venv/bin/python -m pytest -q"
    )
    ci_lines = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if "-m pytest" in line and not line.lstrip().startswith("#")
    ]  # fmt: skip
    assert len(ci_lines) == 1
    assert ci_lines[0] == tests


def test_every_fenced_block_has_a_known_kind() -> None:
    known = {
        "sh", "sh setup", "sh long-running", "sh benchmark", "python", "python pytest", "jsonl",
        "jsonl tasks.jsonl", "json", "",
    }  # fmt: skip
    assert {kind for kind, _ in BLOCKS} <= known
    assert blocks("sh") and blocks("python") and blocks("python pytest")
    assert len(blocks("jsonl")) == 1 and len(blocks("jsonl tasks.jsonl")) == 1


@pytest.fixture(scope="module")
def readme_emulator() -> Iterator[EmulatorProcess]:
    with emulator_process("--task-seconds", "0.05", "--image-mode", "tiny") as running:
        yield running


@pytest.fixture
def scratch(tmp_path: Path, readme_emulator: EmulatorProcess) -> tuple[Path, dict[str, str]]:
    """A folder with the pictures and job file the README names, and the environment to use."""
    (tmp_path / "faces").mkdir()
    (tmp_path / "refs").mkdir()
    for face in SAMPLE_FACES[:2]:
        (tmp_path / "faces" / f"{face.name}.png").write_bytes(draw_face(face, 96))
    for scene in (SAMPLE_SCENES[0], SAMPLE_SCENES[2]):
        (tmp_path / "refs" / f"{scene.name}.png").write_bytes(draw_scene(scene, 96))
    (tmp_path / "face.png").write_bytes(draw_face(SAMPLE_FACES[0], 96))
    (tmp_path / "ref.png").write_bytes(draw_scene(SAMPLE_SCENES[1], 96))
    (tmp_path / "masks").mkdir()
    Image.new("L", (96, 96), 0).save(tmp_path / "masks" / "beach.png")  # refs/beach.png's size
    (tmp_path / "jobs.jsonl").write_text(blocks("jsonl")[0], encoding="utf-8")
    (tmp_path / "tasks.jsonl").write_text(blocks("jsonl tasks.jsonl")[0], encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **readme_emulator.env,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),  # `python examples/...` and `python -m benchmarks...` from ROOT
    }
    return tmp_path, env


def test_python_snippets(scratch: tuple[Path, dict[str, str]]) -> None:
    folder, env = scratch
    for body in blocks("python"):
        done = subprocess.run(
            [sys.executable, "-c", body], cwd=folder, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{body}\n--- stderr\n{done.stderr}"


def test_pytest_snippets(scratch: tuple[Path, dict[str, str]]) -> None:
    folder, env = scratch
    for number, body in enumerate(blocks("python pytest")):
        test_file = folder / f"test_readme_{number}.py"
        test_file.write_text(body, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
             test_file.name],
            cwd=folder, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        summary = done.stdout.strip().splitlines()[-1:]
        assert done.returncode == 0, f"{body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert summary and summary[0].startswith("1 passed"), done.stdout


def test_benchmark_figures_are_written_from_the_committed_results() -> None:
    results = load_results(RESULTS, list(SCENARIOS), quick=False)
    assert readme_block(README) == readme_figures(results), (
        "the README's figures are not what the results make: python -m benchmarks.run --report"
    )
    scale_out = (ROOT / "docs" / "scale-out.md").read_text(encoding="utf-8")
    assert scale_out_block(scale_out) == scale_out_figures(results), (
        "docs/scale-out.md's figures are not what the results make: "
        "python -m benchmarks.run --report"
    )


def test_benchmark_snippets(scratch: tuple[Path, dict[str, str]]) -> None:
    _, env = scratch
    if not (ROOT / "benchmarks" / "run.py").exists():
        pytest.skip("benchmarks/run.py is not written yet")
    for body in blocks("sh benchmark"):
        command = body.strip().split()
        assert command[:3] == ["python", "-m", "benchmarks.run"]
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--help"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and "--quick" in done.stdout
