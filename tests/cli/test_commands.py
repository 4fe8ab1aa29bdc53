"""``generate``, ``upload``, ``result``, ``models``, ``demo`` and error reporting, end to end."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from .conftest import EmulatorProcess, cli

SECRET = "sk-test-0123456789abcdef-SECRET"


def test_generate_then_result_and_download(
    tmp_path: Path, pictures: Path, emulator: EmulatorProcess
) -> None:
    env = {**emulator.env, "NOVITA_API_KEY": SECRET}
    out = tmp_path / "out"
    done = cli(
        "generate", "--face", str(pictures / "ada.png"), "--face", str(pictures / "grace.png"),
        "--ref", str(pictures / "beach.png"), "--prompt", "two friends", "--image-num", "2",
        "--width", "256", "--height", "192", "--image-type", "webp", "--seed", "5",
        "--out", str(out), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.splitlines()]
    assert len(files) == 2 and all(f.parent == out for f in files)
    for path in files:
        assert path.suffix == ".webp"
        with Image.open(path) as image:
            assert image.size == (256, 192)
    task_id = done.stderr.split("submitted task ", 1)[1].split()[0]
    assert files[0].name == f"{task_id}-0.webp"

    shown = cli("result", task_id, env=env)
    assert shown.returncode == 0
    assert "TASK_STATUS_SUCCEED" in shown.stdout and "seed     5" in shown.stdout
    saved = cli("result", task_id, "--download", str(tmp_path / "again"), "--json", env=env)
    assert saved.returncode == 0, saved.stderr
    body, _, paths = saved.stdout.rpartition("}\n")
    assert json.loads(body + "}")["task"]["task_id"] == task_id
    assert len(paths.splitlines()) == 2
    assert all(
        Path(p).read_bytes() == f.read_bytes() for p, f in zip(paths.split(), files, strict=True)
    )
    for run in (done, shown, saved):
        assert SECRET not in run.stdout + run.stderr


def test_upload_prints_one_asset_id_per_file(pictures: Path, emulator: EmulatorProcess) -> None:
    before = emulator.stats()["uploads"]
    done = cli("upload", str(pictures / "ada.png"), str(pictures / "beach.png"), env=emulator.env)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 2 and len(set(ids)) == 2
    assert emulator.stats()["uploads"] == before + 2
    missing = cli("upload", str(pictures / "nope.png"), env=emulator.env)
    assert missing.returncode == 2 and "must name an existing file" in missing.stderr


def test_models_filters_and_limit(emulator: EmulatorProcess) -> None:
    done = cli("models", "--sdxl", "--type", "checkpoint", "--limit", "3", env=emulator.env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    found = cli("models", "--query", "juggernaut", env=emulator.env)
    assert found.returncode == 0
    names = found.stdout.splitlines()
    assert names and all("juggernaut" in n.lower() for n in names)


def test_errors_are_one_line_without_traceback_unless_debug(emulator: EmulatorProcess) -> None:
    env = {**emulator.env, "NOVITA_API_KEY": SECRET}
    plain = cli("result", "no-such-task", env=env)
    assert plain.returncode == 1
    assert plain.stderr.startswith("novita-async: error: NotFoundError")
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = cli("--debug", "result", "no-such-task", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    for run in (plain, debug):
        assert SECRET not in run.stdout + run.stderr
    flagged = cli("result", "no-such-task", "--api-key", SECRET, "--debug", env=emulator.env)
    assert flagged.returncode == 1 and SECRET not in flagged.stdout + flagged.stderr


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards = 0
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cards += tag == "article"
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")


def test_demo_makes_a_dozen_pictures_and_a_gallery(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = cli("demo", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "12 jobs: 12 succeeded, 0 failed" in done.stdout
    assert str(out / "index.html") in done.stdout
    page = Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert page.cards == 12 and len(page.images) == 12
    for src in page.images:
        with Image.open(out / src) as image:
            image.verify()
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["status"] for r in records} == {"succeeded"}
