"""Every flag of ``novita-async run`` in a command line that runs, with the flags it is documented
to go with: one table of representative command lines (``LINES``), each run as a subprocess
against the emulator (and moto's S3 server for ``--staging-dir``) and its documented result
checked. ``test_every_run_flag_is_in_a_command_line`` reads the flags from the parser itself, so a
flag added to ``run`` without a line here fails it.

Flags that cannot run here are exercised as far as they can, and the table says so: ``--ray``,
``--shards`` and ``--ray-address`` need a Ray cluster (tests/ray runs them); here they go in a
``--dry-run``, which decides every line before Ray is asked for anything.
"""

from __future__ import annotations

import argparse
import http.server
import json
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import S3Bucket, served

from novita_async import _spec
from novita_async._cli._settings import build_parser
from novita_async.batch import shard_of

from .conftest import EmulatorProcess, cli
from .test_run import job, write_jobs

# What each flag is documented to go with (its help, or its group's), checked on every line that
# uses it: a representative line shows a flag where it means something.
GOES_WITH: dict[str, tuple[str, ...]] = {
    "--webhook-url": ("--webhook-listen",),  # "the public URL that reaches webhook_listen"
    "--ray": ("--shards",),  # "run the jobs in --shards Ray actors"
    "--shards": ("--ray",),  # "shards (Ray actors) for --ray"
    "--ray-address": ("--ray", "--shards"),  # group "shards on Ray"
    "--json": ("--no-progress",),  # "progress lines go to stderr": plain ones, in a log
    "--nsfw-detection-level": ("--nsfw-detection",),  # a level for the check it turns on
    "--control-guidance-start": ("--controlnet",),  # guidance of the ControlNet units
    "--control-guidance-end": ("--controlnet",),
}


@dataclass
class Context:
    tmp: Path
    emulator: EmulatorProcess
    before: dict[str, Any]
    done: list[Any] = field(default_factory=list)  # each step's CompletedProcess
    bucket: S3Bucket | None = None
    hooks: Hooks | None = None

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def results(self) -> dict[str, dict[str, Any]]:
        lines = (self.out / "results.jsonl").read_text(encoding="utf-8").splitlines()
        return {row["id"]: row for row in map(json.loads, lines)}

    def submitted(self) -> int:
        count: int = self.emulator.stats()["submissions"] - self.before["submissions"]
        return count


@dataclass(frozen=True)
class Line:
    """A command line of ``run`` (``{name}`` placeholders filled by the test), run in ``steps``
    (each its arguments and expected exit status), over ``jobs``; ``check`` looks at what it did."""

    jobs: list[dict[str, Any]]
    steps: list[tuple[str, int]]
    check: Callable[[Context], None]
    s3: bool = False
    prepare: Callable[[Context], None] | None = None


def ok_jobs(count: int, prefix: str = "j") -> list[dict[str, Any]]:
    pairs = [("ada", "beach"), ("grace", "forest"), ("ada", "forest"), ("grace", "beach")]
    return [job(*pairs[n % 4], id=f"{prefix}{n}") for n in range(count)]


def failing(job_id: str) -> dict[str, Any]:
    return job("ada", "beach", id=job_id, prompt="this one [[fail]]")


def all_succeeded(ctx: Context, count: int) -> dict[str, dict[str, Any]]:
    rows = ctx.results()
    assert len(rows) == count and {row["status"] for row in rows.values()} == {"succeeded"}
    assert all((ctx.out / name).is_file() for row in rows.values() for name in row["files"])
    return rows


# --- what each line shows ------------------------------------------------------------------------


def check_pace(ctx: Context) -> None:
    all_succeeded(ctx, 3)
    journal = ctx.tmp / "journal.jsonl"
    kinds = [json.loads(line)["type"] for line in journal.read_text().splitlines()]
    assert kinds.count("submitted") == 3  # the journal went where --journal said
    assert not (ctx.out / ".novita-journal.jsonl").exists()
    assert "DEBUG" in ctx.done[0].stderr  # --debug: the debug log


def check_request(ctx: Context) -> None:
    rows = all_succeeded(ctx, 2)
    for row in rows.values():
        assert len(row["files"]) == 2 and all(name.endswith(".jpeg") for name in row["files"])
        for name in row["files"]:
            with Image.open(ctx.out / name) as image:
                assert image.size == (128, 192)
    # --webhook: the service called that URL once per task.
    assert ctx.hooks is not None
    assert ctx.hooks.wait_for(2), ctx.hooks.task_ids
    assert sorted(ctx.hooks.task_ids) == sorted(row["task_id"] for row in rows.values())


# One line of each v3 task, with nothing but their inputs (and prompts): the flags give the rest.
V3_JOBS: list[dict[str, Any]] = [
    {"id": "t", "task": "txt2img", "prompt": "a lighthouse"},
    {"id": "i", "task": "img2img", "prompt": "a painting", "image": "pictures/beach.png"},
    {"id": "p", "task": "inpainting", "prompt": "a hat", "image": "pictures/ada.png",
     "mask_image": "pictures/grace.png"},
    {"id": "u", "task": "upscale", "image": "pictures/forest.png"},
]  # fmt: skip


def check_v3_request(ctx: Context) -> None:
    rows = all_succeeded(ctx, 4)
    # --width/--height/--image-num: txt2img's and img2img's size and count; inpainting keeps
    # its input's size (64), upscale makes one image --scale-factor times it.
    expected = {
        "t": (2, (128, 192)), "i": (2, (128, 192)), "p": (2, (64, 64)), "u": (1, (192, 192)),
    }  # fmt: skip
    for job_id, (count, size) in expected.items():
        assert len(rows[job_id]["files"]) == count, rows[job_id]
        for name in rows[job_id]["files"]:
            with Image.open(ctx.out / name) as image:
                assert image.size == size, (job_id, name)
    assert {rows[job_id]["seed"] for job_id in "tip"} == {7}  # --seed reached the three
    stats = ctx.emulator.stats()
    routes, before = stats["submissions_by_route"], ctx.before["submissions_by_route"]
    for route in ("txt2img", "img2img", "inpainting", "upscale"):
        assert routes.get(route, 0) - before.get(route, 0) == 1, route
    assert routes.get("submit", 0) == before.get("submit", 0)  # no InstantID task
    assert stats["unknown_fields"] == {}  # no flag sent a field the API does not know


def check_reports(ctx: Context) -> None:
    all_succeeded(ctx, 2)
    report = json.loads(ctx.done[0].stdout)  # --json: stdout is the report and nothing else
    assert json.loads((ctx.tmp / "summary.json").read_text()) == report
    assert report["exit_status"] == 0 and report["summary"]["succeeded"] == 2


def check_fail_fast(ctx: Context) -> None:
    rows = ctx.results()
    assert rows["bad"]["status"] == "failed"
    # The workers read ahead, so a good job may win the one slot before "bad" does; what
    # --fail-fast promises is that nothing is submitted once the failure is known.
    journal = (ctx.out / ".novita-journal.jsonl").read_text(encoding="utf-8").splitlines()
    submitted = [r["id"] for r in map(json.loads, journal) if r["type"] == "submitted"]
    assert submitted[-1] == "bad" and len(submitted) == ctx.submitted() < 3, submitted


def check_retry_failed(ctx: Context) -> None:
    rows = ctx.results()
    assert rows["bad"]["status"] == "failed" and rows["good"]["status"] == "succeeded"
    assert ctx.submitted() == 3  # the failed job once more, the one that succeeded not again
    assert "from an earlier run" in ctx.done[1].stdout


def seed_unknown_submission(ctx: Context) -> None:
    # What a kill -9 between a submission's intent and its answer leaves in the journal.
    ctx.out.mkdir()
    intent = {"type": "submitting", "id": "u", "fingerprint": None, "t": 1.0}
    (ctx.out / ".novita-journal.jsonl").write_text(json.dumps(intent) + "\n")


def check_retry_unknown(ctx: Context) -> None:
    assert "SUBMIT_OUTCOME_UNKNOWN" in ctx.done[0].stdout  # a plain run does not pay again
    all_succeeded(ctx, 2)
    assert ctx.submitted() == 2  # v by the first run, u only when told


def check_budget(ctx: Context) -> None:
    assert ctx.submitted() == 1


def check_shard(ctx: Context) -> None:
    mine = {f"j{n}" for n in range(6) if shard_of(f"j{n}", 2) == 0}
    assert mine and set(ctx.results()) == mine
    assert (ctx.out / ".novita-shards" / "0-of-2").is_dir()
    assert ctx.submitted() == len(mine)


def check_webhooks(ctx: Context) -> None:
    all_succeeded(ctx, 2)
    delivered = ctx.emulator.stats()["webhooks"]["delivered"] - ctx.before["webhooks"]["delivered"]
    assert delivered >= 1  # the events reached the run (tests/cli/test_run_webhooks.py: all)


def check_connection(ctx: Context) -> None:
    all_succeeded(ctx, 1)


def check_s3(ctx: Context) -> None:
    assert ctx.bucket is not None
    keys = ctx.bucket.keys("flags/")
    assert "flags/results.jsonl" in keys and "flags/j0_0.png" in keys
    staged = list((ctx.tmp / "my-staging").rglob(".novita-journal*"))
    assert staged, "the working copy is not under --staging-dir"
    assert not (ctx.tmp / "staging").exists()  # nor under $NOVITA_ASYNC_STAGING


def check_dry_ray(ctx: Context) -> None:
    assert "dry run: nothing was sent" in ctx.done[0].stdout
    assert "2 to submit" in ctx.done[0].stdout
    assert ctx.submitted() == 0


def check_help(ctx: Context) -> None:
    assert "--webhook-url" in ctx.done[0].stdout and "exit status:" in ctx.done[0].stdout


# Each step a command line as a user types it ({name}: the test's own paths and services).
RUN = "run {jobs} --out {out} --no-progress"
MODEL = _spec.RECOMMENDED_MODEL

LINES: dict[str, Line] = {
    # Bounds and pace, the journal elsewhere, the debug log.
    "pace": Line(ok_jobs(3), [(
        f"{RUN} --concurrency 2 --rate 100 --upload-concurrency 2 --poll-concurrency 2 "
        "--submit-concurrency 1 --task-rate instant-id=600 --max-inline-bytes 1000000 "
        "--task-timeout 60 --max-outage 30 --retry-after-cap 5 "
        "--journal {tmp}/journal.jsonl --journal-fsync --download-timeout 30 --debug", 0,
    )], check_pace),
    # Every request flag, as defaults for lines that set none of them.
    "request": Line([{k: v for k, v in j.items() if k != "prompt"} for j in ok_jobs(2)], [(
        f"{RUN} --prompt 'a portrait' --negative-prompt blurry --model {MODEL} --width 128 "
        "--height 192 --image-num 2 --steps 10 --guidance-scale 4.5 --sampler 'Euler a' "
        "--seed 7 --id-strength 0.8 --adapter-strength 0.7 --clip-skip 2 "
        "--controlnet cn-openpose:0.4:openpose --control-guidance-start 0.1 "
        "--control-guidance-end 0.9 --lora style:v1.safetensors:0.5 --image-type jpeg "
        "--nsfw-detection --nsfw-detection-level 1 --webhook {hook}", 0,
    )], check_request),
    # The v3 tasks' flags (and shared ones), as defaults for a line of each task; an unlisted
    # sampler is sent as given to the v3 tasks.
    "v3 request": Line(V3_JOBS, [(
        f"{RUN} --model {MODEL} --upscale-model 4x-UltraSharp --width 128 --height 192 "
        "--image-num 2 --sampler FlowMatchEuler --strength 0.6 --mask-blur 4 --scale-factor 3 "
        "--sd-vae vae.safetensors --seed 7", 0,
    )], check_v3_request),
    # The JSON report on stdout and in a file.
    "reports": Line(ok_jobs(2), [(
        f"{RUN} --json --summary-json {{tmp}}/summary.json --no-nsfw-detection", 0,
    )], check_reports),
    "fail-fast": Line([failing("bad"), *ok_jobs(2)], [(
        f"{RUN} --concurrency 1 --fail-fast", 1,
    )], check_fail_fast),
    "retry-failed": Line([failing("bad"), job("ada", "beach", id="good")], [
        (RUN, 1), (f"{RUN} --retry-failed", 1),
    ], check_retry_failed),
    # --stop-grace's help names --retry-unknown-submits: what a stop leaves unanswered.
    "retry-unknown": Line([job("ada", "beach", id="u"), job("grace", "forest", id="v")], [
        (RUN, 1), (f"{RUN} --retry-unknown-submits --stop-grace 5", 0),
    ], check_retry_unknown, prepare=seed_unknown_submission),
    "budget": Line(ok_jobs(3), [(f"{RUN} --max-tasks 1", 4)], check_budget),
    "shard": Line(ok_jobs(6), [(f"{RUN} --shard 0/2", 0)], check_shard),
    "webhooks": Line(ok_jobs(2), [(
        f"{RUN} --webhook-listen 127.0.0.1:{{port}} --webhook-url http://127.0.0.1:{{port}}", 0,
    )], check_webhooks),
    # The connection from flags, none from the environment.
    "connection": Line(ok_jobs(1), [(
        f"{RUN} --api-key {{api_key}} --base-url {{base_url}} --assets-url {{assets_url}}", 0,
    )], check_connection),
    # An object store's working copy where --staging-dir says (moto's S3 server).
    "s3": Line(ok_jobs(1), [(
        "run {jobs} --out {s3} --no-progress --staging-dir {tmp}/my-staging", 0,
    )], check_s3, s3=True),
    # Needs Ray: a dry run, which decides every line before Ray is asked for anything.
    "ray (dry run)": Line(ok_jobs(2), [(
        f"{RUN} --dry-run --ray --shards 2 --ray-address ray://127.0.0.1:10001 --rate 4", 0,
    )], check_dry_ray),
    "help": Line([], [("run --help", 0), ("run -h", 0)], check_help),
}  # fmt: skip


def run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run: argparse.ArgumentParser = commands.choices["run"]
    return run


def flags_of(command: str) -> set[str]:
    return {arg.partition("=")[0] for arg in shlex.split(command) if arg.startswith("-")}


def test_every_run_flag_is_in_a_command_line() -> None:
    used = set().union(*(flags_of(cmd) for line in LINES.values() for cmd, _ in line.steps))
    missing = [
        "/".join(action.option_strings)
        for action in run_parser()._actions
        for flag in action.option_strings
        if flag not in used
    ]
    assert missing == []
    assert used <= {flag for action in run_parser()._actions for flag in action.option_strings}


def test_every_line_has_the_flags_its_flags_go_with() -> None:
    known = {flag for action in run_parser()._actions for flag in action.option_strings}
    assert set(GOES_WITH) | {f for fs in GOES_WITH.values() for f in fs} <= known
    for name, line in LINES.items():
        for command, _ in line.steps:
            flags = flags_of(command)
            for flag in flags & GOES_WITH.keys():
                assert set(GOES_WITH[flag]) <= flags, (name, flag, GOES_WITH[flag])
            if "--staging-dir" in flags:  # a working copy is an object store's
                args = shlex.split(command)
                assert args[args.index("--out") + 1] == "{s3}", name


class Hooks(http.server.ThreadingHTTPServer):
    """A webhook receiver of the test's own: the task ids of the events it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.task_ids: list[str] = []
        self.arrived = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait_for(self, count: int) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.task_ids) >= count, timeout=30)


class _HookHandler(http.server.BaseHTTPRequestHandler):
    server: Hooks

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
        with self.server.arrived:
            self.server.task_ids.append(body["payload"]["task"]["task_id"])
            self.server.arrived.notify_all()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    with served(Hooks()) as server:
        yield server


def free_port() -> int:
    from .test_run_webhooks import free_port as port

    return port()


@pytest.mark.parametrize("name", list(LINES))
def test_command_line(
    name: str,
    tmp_path: Path,
    pictures: Path,
    emulator: EmulatorProcess,
    hooks: Hooks,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = LINES[name]
    ctx = Context(tmp_path, emulator, emulator.stats(), hooks=hooks)
    env = dict(emulator.env)
    values = {"tmp": str(tmp_path), "out": str(ctx.out), "hook": hooks.url,
              "port": str(free_port())}  # fmt: skip
    values |= {"api_key": env["NOVITA_API_KEY"], "base_url": env["NOVITA_BASE_URL"],
               "assets_url": env["NOVITA_ASSETS_URL"]}  # fmt: skip
    if line.s3:
        ctx.bucket = request.getfixturevalue("s3_bucket")
        values["s3"] = ctx.bucket.url("flags")
    if name == "connection":  # nothing from the environment: the flags say it all
        for variable in env:
            monkeypatch.delenv(variable, raising=False)
        env = {}
    values["jobs"] = str(write_jobs(tmp_path, line.jobs)) if line.jobs else "jobs.jsonl"
    if line.prepare is not None:
        line.prepare(ctx)
    for command, status in line.steps:
        done = cli(*(arg.format(**values) for arg in shlex.split(command)), env=env)
        ctx.done.append(done)
        assert done.returncode == status, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    line.check(ctx)
