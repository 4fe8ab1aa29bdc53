"""The single-call commands: ``generate``, ``upload``, ``result`` and ``models``.

Each returns the process exit status. Machine-readable output (file paths, asset ids, model
names) goes to stdout, one item a line; progress and notes go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import anyio
import attrs

from .. import Model, NovitaClient, TaskResult, TaskStatus, Timeouts, ValidationError
from .._converter import converter
from ._fields import build_request
from ._printable import printable, printable_lines
from ._request_flags import request_fields

__all__ = ["generate", "make_client", "models", "result", "upload"]


def make_client(ns: argparse.Namespace) -> NovitaClient:
    """A client from the connection flags, falling back to the ``NOVITA_*`` variables.

    ``--download-timeout`` (where the command has it) replaces the default deadline of one image
    download; the other timeouts keep theirs.
    """
    download_timeout = getattr(ns, "download_timeout", None)
    timeouts = None if download_timeout is None else Timeouts(download_total=download_timeout)
    return NovitaClient(
        ns.api_key, base_url=ns.base_url, assets_url=ns.assets_url, timeouts=timeouts
    )


def _note(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


async def _existing(flag: str, names: list[str] | None) -> list[Path]:
    paths = [Path(name) for name in names or ()]
    for path in paths:
        if not await anyio.Path(path).is_file():
            raise ValidationError(flag, str(path), "must name an existing file")
    return paths


def _progress_printer(enabled: bool) -> Any:
    last: list[str] = []

    def show(result: TaskResult) -> None:
        task = result.task
        percent = "" if task.progress_percent is None else f" {task.progress_percent:.0f}%"
        line = f"{task.status.value}{percent}"
        if enabled and line not in last:
            last[:] = [line]
            _note(f"  {result.task_id}: {line}")

    return show


async def generate(ns: argparse.Namespace) -> int:
    faces = await _existing("--face", ns.face)
    refs = await _existing("--ref", ns.ref)
    kps = await _existing("--face-kps", ns.face_kps) if ns.face_kps else None
    template = build_request(request_fields(ns))  # already checked by the parser
    if kps is not None and len(kps) != len(faces):
        raise ValidationError(
            "--face-kps", f"{len(kps)} files", f"give one per --face ({len(faces)})"
        )
    out = Path(ns.out)
    async with make_client(ns) as client:
        ids = await client.upload_assets([*faces, *refs, *(kps or ())])
        request = attrs.evolve(
            template,
            face_image_assets_ids=ids[: len(faces)],
            ref_image_assets_ids=ids[len(faces) : len(faces) + len(refs)],
            face_kps_assets_ids=None if kps is None else ids[len(faces) + len(refs) :],
        )
        task_id = await client.submit_instant_id(request)
        # Printed at once: if the wait is interrupted, `novita-async result` picks the task up.
        _note(f"submitted task {task_id}")
        done = await client.wait_for_task(
            task_id, on_progress=_progress_printer(not ns.no_progress)
        )
        files = await client.download_images(done, out, stem=f"{task_id}-")
    seed = "" if done.extra.seed is None else f" (seed {done.extra.seed})"
    _note(f"task {task_id} succeeded{seed}: {len(files)} image(s)")
    for path in files:
        print(path)
    return 0


async def upload(ns: argparse.Namespace) -> int:
    files = await _existing("FILE", ns.files)
    async with make_client(ns) as client:
        ids = await client.upload_assets(files)
    for asset_id in ids:
        print(asset_id)
    return 0


def _describe(result: TaskResult) -> list[str]:
    task = result.task
    rows = [("task_id", task.task_id), ("status", task.status.value)]
    if task.reason:
        rows.append(("reason", task.reason))
    if not task.status.is_final:
        if task.progress_percent is not None:
            rows.append(("progress", f"{task.progress_percent:.0f}%"))
        if task.eta is not None:
            rows.append(("eta", f"{task.eta:g}s"))
    if result.extra.seed is not None:
        rows.append(("seed", str(result.extra.seed)))
    rows.append(("images", str(len(result.images))))
    return [f"{name:<9}{value}" for name, value in rows]


async def result(ns: argparse.Namespace) -> int:
    async with make_client(ns) as client:
        if ns.wait:
            answer = await client.wait_for_task(ns.task_id)
        else:
            answer = await client.get_task_result(ns.task_id)
        files: list[Path] = []
        if ns.download is not None and answer.status is TaskStatus.SUCCEED:
            files = await client.download_images(answer, ns.download, stem=f"{ns.task_id}-")
    if ns.json:
        print(json.dumps(converter.unstructure(answer), indent=2, default=str))
    else:
        print(printable_lines(_describe(answer)))
    for path in files:
        print(path)
    if ns.download is not None and answer.status is not TaskStatus.SUCCEED:
        _note(f"nothing downloaded: the task is {answer.status.value} (add --wait to wait)")
        return 1
    return 0 if answer.status is not TaskStatus.FAILED else 1


async def models(ns: argparse.Namespace) -> int:
    async with make_client(ns) as client:
        # list_models is an async generator: close it when --limit stops early.
        listing = cast(
            AsyncGenerator[Model, None],
            client.list_models(
                types=ns.model_type, is_sdxl=True if ns.sdxl else None, query=ns.query
            ),
        )
        count = 0
        async with aclosing(listing) as models:
            async for model in models:
                print(printable(model.sd_name))
                count += 1
                if ns.limit is not None and count >= ns.limit:
                    break
    return 0
