"""OUT/index.html: one card per job, escaped, self-contained; rendered by Chromium when present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from novita_async._cli._gallery import read_results, render_gallery, write_gallery

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2217bc10000000049454e44ae426082"
)

RECORDS: list[dict[str, Any]] = [
    {"id": "ok one", "status": "succeeded", "task_id": "t-1", "seed": 42,
     "files": ["ok one/0.png", "ok one/1.png"], "error": None},
    {"id": "bad", "status": "failed", "task_id": "t-2", "seed": None, "files": [],
     "error": {"type": "TaskFailedError", "reason": "TASK_FAILED",
               "message": "<script>alert('x')</script> & more"}},
    {"id": "<b>id</b>", "status": "succeeded", "task_id": "t-3", "seed": 7,
     "files": ["<b>id</b>/0.png"], "error": None},
]  # fmt: skip
PROMPTS = {"bad": "a <marquee>prompt</marquee>", "ok one": 'sunset "portrait"', "<b>id</b>": "x"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def cards(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "article"]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_one_card_per_job_in_job_order_with_everything_escaped() -> None:
    page = parse(render_gallery(RECORDS, PROMPTS))
    cards = page.cards()
    assert [c["id"] for c in cards] == ["job-bad", "job-ok%20one", "job-%3Cb%3Eid%3C%2Fb%3E"]
    assert {c["class"] for c in cards} == {"card failed", "card succeeded"}
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "marquee", "b", "link", "iframe"}  # all escaped, nothing loaded
    text = "".join(page.text)
    assert "<script>alert('x')</script> & more" in text  # shown, as text
    assert "a <marquee>prompt</marquee>" in text and 'sunset "portrait"' in text
    for needle in ("TASK_FAILED", "t-1", "42", "t-3", "succeeded", "failed"):
        assert needle in text
    srcs = [a["src"] for t, a in page.tags if t == "img"]
    assert srcs == ["ok%20one/0.png", "ok%20one/1.png", "%3Cb%3Eid%3C/b%3E/0.png"]
    for tag, attributes in page.tags:  # no external asset of any kind
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            assert "://" not in value and not value.startswith("//"), (tag, value)


def test_images_of_an_earlier_request_are_labelled_never_shown_as_this_requests() -> None:
    changed = {
        "id": "a", "status": "failed", "task_id": "t-old", "seed": None, "files": ["a_0.png"],
        "error": {"type": "JobInputError", "reason": "JOB_CHANGED",
                  "message": "job 'a' differs from the request this output folder's journal ..."},
    }  # fmt: skip
    page = parse(render_gallery([changed], {"a": "a new prompt"}))
    (card,) = page.cards()
    assert card["class"] == "card failed"
    text = "".join(page.text)
    assert "Earlier images: made by task t-old for an earlier request of this job" in text
    assert "not for the request shown here" in text
    classes = [a.get("class") for t, a in page.tags if t == "div"]
    assert "images earlier-images" in classes
    # A succeeded card carries no such label.
    assert "Earlier images" not in render_gallery(RECORDS, PROMPTS)


def test_write_gallery_reads_results_and_keeps_last_line_per_job(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in RECORDS]
    retried = {**RECORDS[1], "status": "succeeded", "files": ["bad/0.png"], "error": None}
    lines += [json.dumps(retried), '{"id": "torn", "sta']
    (tmp_path / "results.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert [r["id"] for r in read_results(tmp_path / "results.jsonl")] == [
        "ok one", "bad", "<b>id</b>"
    ]  # fmt: skip
    path = write_gallery(tmp_path, PROMPTS)
    assert path == tmp_path / "index.html"
    page = parse(path.read_text(encoding="utf-8"))
    assert len(page.cards()) == 3
    assert all(c["class"] == "card succeeded" for c in page.cards())
    assert not list(tmp_path.glob(".index-*"))


def test_empty_results_make_an_empty_page(tmp_path: Path) -> None:
    page = parse(write_gallery(tmp_path).read_text(encoding="utf-8"))
    assert page.cards() == []
    assert "0 jobs" in "".join(page.text)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# CI installs Chromium (.ci/run) and must run this test: only elsewhere may it be skipped.
@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true", reason="chromium is not installed"
)
def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for record in RECORDS:
        for name in record["files"]:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(PNG_1x1)
    (out / "results.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS))
    page = write_gallery(out, PROMPTS)
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1000,800", page.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 4  # something was drawn, not a blank page
