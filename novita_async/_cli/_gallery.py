"""``OUT/index.html``: a static page with one card per job, built from ``OUT/results.jsonl``.

The page needs no server and loads nothing from outside: images are relative paths inside OUT,
the style sheet is inline. Every value from a job or the service is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from .._files import looks_like_url, write_atomically
from ..batch import JobStatus

GALLERY_NAME = "index.html"

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; background: #f6f6f4; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
.summary { margin: 0 0 1rem; color: #555; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }
.card { background: #fff; border-radius: 8px; padding: .7rem; box-shadow: 0 1px 3px #0002; }
.card.failed { border-left: 4px solid #c33; }
.card.succeeded { border-left: 4px solid #3a3; }
.images { display: flex; flex-wrap: wrap; gap: .3rem; }
.images img { width: 100%; height: auto; border-radius: 4px; background: #eee; }
.images.many img { width: calc(50% - .15rem); }
.card h2 { font-size: 1rem; margin: .4rem 0 .2rem; word-break: break-all; }
.prompt { margin: .2rem 0; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .6rem; margin: .3rem 0 0; color: #555; }
dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
.error { color: #a11; white-space: pre-wrap; margin: .3rem 0 0; }
.earlier { margin: 0 0 .3rem; font-weight: 600; color: #8a5a00; }
.images.earlier-images img { opacity: .55; filter: grayscale(60%); }
.inputs { display: flex; flex-wrap: wrap; gap: .3rem; margin: .3rem 0; }
.inputs figure { margin: 0; max-width: calc(50% - .15rem); font-size: .8rem; color: #555; }
.inputs img { width: 100%; height: auto; border-radius: 4px; background: #eee; }
"""


@attrs.frozen
class CardInputs:
    """What a v3 job's card shows besides its results: its ``task``, and its input images as
    ``(name, as the job file gives it, link or None)``: a path relative to OUT, or the URL."""

    task: str
    images: tuple[tuple[str, str, str | None], ...] = ()


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl``, the last one per job id, in first-seen order."""
    records: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line after a crash; the next run rebuilds the file
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return list(records.values())


def _inputs_html(inputs: CardInputs | None, job_id: str) -> str:
    """The input images, a file shown small and linked, a URL only linked: the page loads
    nothing from outside."""
    esc = html.escape
    if inputs is None or not inputs.images:
        return ""
    items = []
    for name, given, link in inputs.images:
        if link is None:
            items.append(f"<figure><figcaption>{esc(name)}: {esc(given)}</figcaption></figure>")
        elif scheme := looks_like_url(link):
            target = esc(given)
            if scheme in ("http", "https"):  # never a javascript: or data: link
                target = f'<a href="{esc(link)}" rel="noreferrer">{target}</a>'
            items.append(f"<figure><figcaption>{esc(name)}: {target}</figcaption></figure>")
        else:
            href = esc(quote(Path(link).as_posix()))
            items.append(
                f'<figure><a href="{href}"><img src="{href}" loading="lazy" '
                f'alt="{esc(job_id)} {esc(name)}"></a><figcaption>{esc(name)}</figcaption></figure>'
            )
    return f'<div class="inputs">{"".join(items)}</div>'


def _card(record: Mapping[str, Any], prompt: str | None, inputs: CardInputs | None = None) -> str:
    esc = html.escape
    job_id = str(record.get("id", ""))
    status = str(record.get("status", "unknown"))
    files = [f for f in record.get("files") or () if isinstance(f, str)]
    images = "".join(
        f'<a href="{esc(quote(f))}"><img src="{esc(quote(f))}" loading="lazy" '
        f'alt="{esc(job_id)} image {n}"></a>'
        for n, f in enumerate(files)
    )
    facts = [("status", status)]
    task = inputs.task if inputs is not None else record.get("task")
    if isinstance(task, str) and task != "instant-id":
        facts.insert(0, ("task", task))
    for key, label in (("seed", "seed"), ("task_id", "task id")):
        if record.get(key) is not None:
            facts.append((label, str(record[key])))
    details = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    error = record.get("error")
    error_html = ""
    if isinstance(error, Mapping):
        reason = str(error.get("reason") or error.get("type") or "error")
        error_html = (
            f'<p class="error"><strong>{esc(reason)}</strong>: '
            f"{esc(str(error.get('message', '')))}</p>"
        )
    kind = "images many" if len(files) > 1 else "images"
    earlier_html = ""
    if files and status != JobStatus.SUCCEEDED:
        # Images of a job that did not succeed now (its line changed since its task was paid
        # for): never shown as the result of the request on this card.
        kind += " earlier-images"
        task = f" by task {record['task_id']}" if record.get("task_id") else ""
        earlier_html = (
            f'<p class="earlier">Earlier images: made{esc(task)} for an earlier request of '
            "this job, not for the request shown here</p>"
        )
    prompt_html = f'<p class="prompt">{esc(prompt)}</p>' if prompt else ""
    return (
        f'<article class="card {esc(status)}" id="job-{esc(quote(job_id, safe=""))}">'
        f'{earlier_html}<div class="{kind}">{images}</div><h2>{esc(job_id)}</h2>{prompt_html}'
        f"{_inputs_html(inputs, job_id)}<dl>{details}</dl>{error_html}</article>"
    )


def render_gallery(
    records: Iterable[Mapping[str, Any]],
    prompts: Mapping[str, str] | None = None,
    *,
    title: str = "novita-async results",
    inputs: Mapping[str, CardInputs] | None = None,
) -> str:
    """The page for ``records`` (``results.jsonl`` lines); ``prompts`` maps job id to prompt,
    ``inputs`` a v3 job's id to its task and input images.

    Cards follow the order of ``prompts`` (the job file's order) when given, then any other record.
    """
    prompts = prompts or {}
    by_id = {str(r.get("id")): r for r in records}
    order = [i for i in prompts if i in by_id] + [i for i in by_id if i not in prompts]
    ok = sum(1 for r in by_id.values() if r.get("status") == JobStatus.SUCCEEDED)
    images = sum(len(r.get("files") or ()) for r in by_id.values())
    inputs = inputs or {}
    cards = "\n".join(_card(by_id[i], prompts.get(i), inputs.get(i)) for i in order)
    summary = f"{len(by_id)} jobs: {ok} succeeded, {len(by_id) - ok} failed; {images} images"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>"
        f'<p class="summary">{html.escape(summary)}</p>\n'
        f'<main class="cards">\n{cards}\n</main></body></html>\n'
    )


def write_gallery(
    out_dir: Path,
    prompts: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    inputs: Mapping[str, CardInputs] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` from ``out_dir/results.jsonl`` (atomically); return its path."""
    page = render_gallery(
        read_results(out_dir / "results.jsonl"),
        prompts,
        title=title or f"{out_dir.name} results",
        inputs=inputs,
    )
    target = out_dir / GALLERY_NAME
    write_atomically(target, [page.encode("utf-8")], fsync=False)
    return target
