"""Every ``novita-async`` command the README and ``docs/`` show, run as a user would run it.

Each command of a fenced block (any kind, unlabelled ones included) is a step of a scenario below,
written as the docs write it and run with bash in a scratch folder holding the pictures and the
job files (the README's ``jsonl`` blocks: ``jsonl NAME`` is NAME, a bare one ``jobs.jsonl``) the
docs name, against one emulator process (0.05 s tasks, tiny images), moto's S3 server where a
command names ``s3://`` and one local Ray instance where it names Ray. Placeholders become this
test's own services through ``SUBSTITUTIONS``, the one table of what is not run as written. Each
step checks what the docs say it does: exit status, files, summary, what was sent.

``test_every_documented_command_is_run`` extracts the commands of every fenced block (lines
starting with ``novita-async``, ``$ novita-async`` or ``VAR=... novita-async``, continuations
joined, and commands after ``$(``, ``&&``, ``||``, ``;``) and fails for any that no step runs, so a
command added to the docs without a test fails the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cli.conftest import emulator_process
from PIL import Image
from support import S3_SECRET, S3Bucket, create_bucket, s3_env

from novita_async.emulator import EmulatorProcess
from novita_async.emulator._images import SAMPLE_FACES, SAMPLE_SCENES, draw_face, draw_scene

ROOT = Path(__file__).resolve().parent.parent

# --- what is not run as written -----------------------------------------------------------------

SUBSTITUTIONS: dict[str, str] = {
    # The object-storage block's credentials and S3-compatible server: moto's, on loopback.
    "AWS_ACCESS_KEY_ID=...": "AWS_ACCESS_KEY_ID={aws_access_key_id}",
    "AWS_SECRET_ACCESS_KEY=...": "AWS_SECRET_ACCESS_KEY={aws_secret_access_key}",
    "AWS_ENDPOINT_URL=http://127.0.0.1:9000": "AWS_ENDPOINT_URL={s3_endpoint}",
    # Buckets: one bucket of moto's server (each command its own prefix).
    "s3://my-bucket/": "s3://{bucket}/",
    "s3://bucket/": "s3://{bucket}/",
    # A Ray cluster's address, either form: the test's one local instance (its GCS address,
    # HOST:PORT; it runs no Ray Client server, so the ray:// form itself is Ray's, not tested).
    "--ray-address HOST:6379": "--ray-address {ray_address}",
    "--ray-address ray://head:10001": "--ray-address {ray_address}",
    # A folder shared by the cluster's nodes: one node here.
    "/shared/out": "{scratch}/shared/out",
    # The API key the docs tell the reader to export: the emulator's.
    "export NOVITA_API_KEY=...": "export NOVITA_API_KEY={novita_api_key}",
    # The set-up line's demo, from the venv's bin folder, which is on PATH here.
    ".venv/bin/novita-async": "novita-async",
    # The examples, run from the scratch folder.
    "python examples/": "python {root}/examples/",
}
"""Documented text -> what runs instead ({fields} are this test's services, see ``Services``).

Besides these, every step's environment holds what the reader's would: ``NOVITA_*`` pointing at
the emulator (what ``novita-async emulator`` prints), ``RAY_ADDRESS`` = the local Ray instance
for the Ray scenarios (so the command documented as starting "a local Ray instance" joins the
test's instead of starting its own: ``ray.init()`` reads it), ``AWS_*`` for moto's server where a
command names ``s3://`` and the docs say the machine has credentials (not for the object-storage
block, which sets them itself), and ``NOVITA_ASYNC_STAGING`` in the scratch folder.
"""

# The README's job file: four jobs, five images (line 3 asks for two, line 4 for WebP).
README_JOB_FILES = ("ada-beach_0.png", "ada-city_0.png", "3_0.png", "3_1.png", "4_0.webp")
README_JOBS = 4
# The README's job file of every task (tasks.jsonl): each image and the size its task implies
# (txt2img, img2img: width x height; inpainting: the input's, 96 x 96 here; upscale: the
# input's times 4; InstantID: its default 1024 x 1024).
TASK_FILES = {
    "lighthouse_0.png": (1024, 768), "lighthouse_1.png": (1024, 768),
    "beach-oil_0.png": (768, 768), "boat_0.png": (96, 96), "city-x4_0.png": (384, 384),
    "ada-city_0.png": (1024, 1024),
}  # fmt: skip
TASK_JOBS = 5


# --- the docs' commands ---------------------------------------------------------------------------

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Where a command starts: a line's start (after a `$ ` prompt and VAR=value assignments), or
# after `$(`, `&&`, `||`, `;`. A path before the name (.venv/bin/) is the same command.
COMMAND_START = re.compile(
    r"(?:^\s*(?:\$\s+)?|\$\(|&&|\|\||;)\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:[\w./-]*/)?"
    r"(?=novita-async\s)"
)
# Where it ends: a comment, another command, a redirection, the end of `$(...)`.
COMMAND_END = re.compile(r"\s+#|&&|\|\||;|\)|\s\d?>|\|")


def documents() -> dict[str, str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in paths}


def fenced_blocks() -> list[tuple[str, str, str]]:
    """(document, info string, body) of every fenced block."""
    return [
        (name, info.strip(), body)
        for name, text in documents().items()
        for info, body in FENCE.findall(text)
    ]


def logical_lines(text: str) -> list[str]:
    """Lines, with those ending in a backslash joined to the next (as the shell reads them)."""
    return [line for line in re.sub(r"\\\n\s*", "", text).splitlines() if line.strip()]


def commands(text: str) -> list[str]:
    """The ``novita-async`` commands in ``text``, whitespace normalised; shown output is not
    a command (a line must start with one, or a `$(`, `&&`, `||`, `;` must come before it)."""
    found = []
    for line in logical_lines(text):
        for start in COMMAND_START.finditer(line):
            rest = line[start.end() :]
            end = COMMAND_END.search(rest)
            found.append(" ".join((rest if end is None else rest[: end.start()]).split()))
    return found


def documented_commands() -> dict[str, str]:
    """Each command of a fenced block -> the document showing it."""
    return {command: name for name, _, body in fenced_blocks() for command in commands(body)}


# --- the steps ------------------------------------------------------------------------------------


@attrs.frozen
class Services:
    """What this test runs the docs against; the fields SUBSTITUTIONS refers to."""

    scratch: Path
    emulator: EmulatorProcess
    bucket: S3Bucket | None = None
    ray_address: str | None = None

    def fields(self) -> dict[str, str]:
        fields = {
            "root": str(ROOT),
            "scratch": str(self.scratch),
            "novita_api_key": self.emulator.env["NOVITA_API_KEY"],
        }
        if self.bucket is not None:
            fields |= {
                "bucket": self.bucket.name,
                "s3_endpoint": self.bucket.endpoint,
                "aws_access_key_id": self.bucket.env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": self.bucket.env["AWS_SECRET_ACCESS_KEY"],
            }
        if self.ray_address is not None:
            fields["ray_address"] = self.ray_address
        return fields


@attrs.frozen
class Ran:
    """A step's run: its process, what the emulator counted meanwhile, where it ran."""

    done: subprocess.CompletedProcess[str]
    sent: int  # task submissions the emulator received during the step
    services: Services

    @property
    def folder(self) -> Path:
        return self.services.scratch

    @property
    def bucket(self) -> S3Bucket:
        assert self.services.bucket is not None
        return self.services.bucket


Check = Callable[[Ran], None]


@attrs.frozen
class Step:
    """One documented command (or block), as the docs write it, and what they say it does."""

    text: str
    exit: int = 0
    sent: int | None = None  # submissions it makes (None: not checked)
    stdout: tuple[str, ...] = ()  # what its standard output says
    checks: tuple[Check, ...] = ()
    kind: str = "sh"  # "sh": run with bash; "python": a fragment awaited in a script
    env: dict[str, str] = attrs.field(factory=dict)  # set ("" unsets) for this step only


def ran_the_readme_jobs(out: str, *, gallery: bool = True) -> Check:
    """OUT holds the README jobs' images, results.jsonl (each job succeeded) and, from the
    command (not from the Python API), index.html."""

    def check(ran: Ran) -> None:
        folder = ran.folder / out
        results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        assert {line["status"] for line in results} == {"succeeded"}, results
        assert sorted(f for line in results for f in line["files"]) == sorted(README_JOB_FILES)
        for name in README_JOB_FILES:
            assert (folder / name).stat().st_size > 0, name
        assert (folder / "index.html").is_file() == gallery

    return check


def ran_the_task_jobs(out: str) -> Check:
    """OUT holds the images of tasks.jsonl, each of its task's size, every job succeeded."""

    def check(ran: Ran) -> None:
        folder = ran.folder / out
        results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        assert {line["status"] for line in results} == {"succeeded"}, results
        assert sorted(f for line in results for f in line["files"]) == sorted(TASK_FILES)
        for name, size in TASK_FILES.items():
            with Image.open(folder / name) as image:
                assert image.size == size, name

    return check


def stored_the_readme_jobs(prefix: str) -> Check:
    """The bucket's PREFIX holds the README jobs' images, results.jsonl, index.html, journal."""

    def check(ran: Ran) -> None:
        keys = set(ran.bucket.keys(prefix + "/"))
        results = [
            json.loads(line) for line in ran.bucket.get(f"{prefix}/results.jsonl").splitlines()
        ]
        assert {line["status"] for line in results} == {"succeeded"}, results
        assert sorted(f for line in results for f in line["files"]) == sorted(README_JOB_FILES)
        assert {f"{prefix}/{name}" for name in (*README_JOB_FILES, "index.html")} <= keys
        assert any(key.endswith(".jsonl") and "/.novita-" in key for key in keys), keys
        for output in (ran.done.stdout, ran.done.stderr):
            assert S3_SECRET not in output

    return check


def shards(out: str, count: int, *, stored: bool = False) -> Check:
    """Each of COUNT shards has its folder (or its keys) under OUT/.novita-shards/."""

    def check(ran: Ran) -> None:
        if stored:
            keys = ran.bucket.keys(f"{out}/.novita-shards/")
            found = {key.split("/")[2] for key in keys}
        else:
            found = {path.name for path in (ran.folder / out / ".novita-shards").glob("[!.]*")}
        assert found == {f"{k}-of-{count}" for k in range(count)}, found

    return check


def wrote_nothing(out: str) -> Check:
    def check(ran: Ran) -> None:
        assert not (ran.folder / out).exists() or not any((ran.folder / out).iterdir())

    return check


def summary_json(path: str, **expected: Any) -> Check:
    """PATH holds the run's JSON document: exit_status 0, and the summary's fields EXPECTED."""

    def check(ran: Ran) -> None:
        document = json.loads((ran.folder / path).read_text())
        assert document["exit_status"] == 0 and document["error"] is None, document
        assert document["results"] == "nightly/results.jsonl", document
        assert {name: document["summary"][name] for name in expected} == expected, document

    return check


def progress_in(path: str) -> Check:
    def check(ran: Ran) -> None:
        lines = (ran.folder / path).read_text().splitlines()
        assert sum("succeeded" in line for line in lines) == README_JOBS, lines

    return check


def status_json(ran: Ran) -> None:
    status = json.loads(ran.done.stdout)
    assert (status["jobs"], status["succeeded"], status["failed"]) == (README_JOBS, README_JOBS, 0)
    assert (status["never_submitted"], status["images"], status["images_missing"]) == (0, 5, 0)


def journal_unchanged(ran: Ran) -> None:
    journal = ran.folder / "nightly" / ".novita-journal.jsonl"
    assert journal.read_bytes() == (ran.folder / "journal-before-repair").read_bytes()
    assert not list(journal.parent.glob("*.damaged-*"))


def keep_journal(ran: Ran) -> None:
    """Keep a copy of nightly's journal (for the repair step to compare with)."""
    journal = (ran.folder / "nightly" / ".novita-journal.jsonl").read_bytes()
    (ran.folder / "journal-before-repair").write_bytes(journal)


def images_printed(count: int, suffix: str) -> Check:
    """stdout: the image paths, COUNT of them, each a file."""

    def check(ran: Ran) -> None:
        paths = ran.done.stdout.split()
        assert len(paths) == count and all(p.endswith(suffix) for p in paths), ran.done.stdout
        assert all((ran.folder / p).stat().st_size > 0 for p in paths)

    return check


def asset_ids(count: int) -> Check:
    def check(ran: Ran) -> None:
        ids = ran.done.stdout.split()
        assert len(ids) == count and all(re.fullmatch(r"[A-Za-z0-9_=+/-]{8,}", i) for i in ids)

    return check


def asset_echoed(ran: Ran) -> None:
    assert re.fullmatch(r"uploaded as [A-Za-z0-9_=+/-]{8,}\n", ran.done.stdout), ran.done.stdout


def file_exists(path: str) -> Check:
    def check(ran: Ran) -> None:
        assert (ran.folder / path).is_file(), path

    return check


READ_EVERYTHING = "4 jobs: 4 succeeded, 0 failed"
FROM_EARLIER = "4 jobs: 4 succeeded, 0 failed, 4 from an earlier run"
EXIT_STATUS_SCRIPT = """\
status=0
novita-async run jobs.jsonl --out results --max-outage 600 --download-timeout 120 \\
    --no-progress || status=$?
case $status in
  0) echo "every job succeeded" ;;
  1) echo "some jobs failed: the summary says what to run next" ;;
  3) echo "the run stopped: fix the cause it named, then run the same command again" ;;
  130) echo "interrupted: run the same command again to continue" ;;
esac
"""
OBJECT_STORAGE_BLOCK = """\
export AWS_ACCESS_KEY_ID=...  AWS_SECRET_ACCESS_KEY=...  AWS_REGION=eu-west-1
export AWS_ENDPOINT_URL=http://127.0.0.1:9000  AWS_ALLOW_HTTP=true    # an S3-compatible server
novita-async run jobs.jsonl --out s3://my-bucket/portraits
"""
RUN_SHARDED_SNIPPET = """\
from novita_async import BatchOptions
from novita_async.ray import run_sharded

summary = await run_sharded(jobs, "out", BatchOptions(rate=8.0), shards=4)  # NOVITA_API_KEY
"""
SCALE_OUT_COMMAND = """\
export NOVITA_API_KEY=...                # on the driver only: the shards get it wrapped, masked
novita-async run jobs.jsonl --out s3://my-bucket/run-42 --ray --ray-address ray://head:10001 \\
    --shards 4 --rate 0.3
"""

SCENARIOS: dict[str, tuple[Step, ...]] = {
    # README, "The command line" and "Many jobs", in order: one scratch folder.
    "command-line": (
        Step(
            "novita-async generate --face face.png --ref ref.png "
            '--prompt "a portrait, golden hour" --out out',
            sent=1, checks=(images_printed(1, ".png"),),
        ),
        Step(
            'novita-async generate --face face.png --ref ref.png --prompt "two of them" '
            "--image-num 2 \\\n"
            '    --width 768 --height 1024 --steps 30 --sampler "DPM++ 2M Karras" --seed 42 \\\n'
            '    --lora "add-detail-xl.safetensors:0.6" --image-type jpeg --out out',
            sent=1, checks=(images_printed(2, ".jpeg"),),
        ),
        Step("novita-async generate --task txt2img --model sd_xl_base_1.0.safetensors "
             '--prompt "a lighthouse" --out out',
             sent=1, checks=(images_printed(1, ".png"),)),
        Step("novita-async generate --task upscale --image refs/city.png "
             "--upscale-model RealESRNet_x4plus \\\n    --scale-factor 4 --out out",
             sent=1, checks=(images_printed(1, ".png"),)),
        Step("novita-async upload face.png ref.png          # one asset id per line",
             sent=0, checks=(asset_ids(2),)),
        Step("novita-async models --sdxl --type checkpoint --query juggernaut",
             stdout=("juggernaut",), sent=0),
        Step('ASSET=$(novita-async upload face.png) && echo "uploaded as $ASSET"',
             sent=0, checks=(asset_echoed,)),
        Step("novita-async run jobs.jsonl --out results --width 768 --height 1024 "
             "--concurrency 50 --rate 10",
             sent=README_JOBS, stdout=(READ_EVERYTHING,), checks=(ran_the_readme_jobs("results"),)),
        # "The second command resumes the first: every job has ended, so nothing is sent again."
        Step("novita-async run jobs.jsonl --out results --width 768 --height 1024 --no-progress",
             sent=0, stdout=(FROM_EARLIER,), checks=(ran_the_readme_jobs("results"),)),
        Step("python examples/bulk_jsonl.py"),
    ),
    # README, "Every task in one job file": its dry run, tasks.jsonl, then the same with per-task
    # rates (every job has ended: a plain resume), then the example doing it from Python.
    "tasks": (
        # "with a key set, it also shows the account's balance"; sends and writes nothing.
        Step("novita-async run tasks.jsonl --out tasks --dry-run", sent=0,
             stdout=("5 tasks and 6 images would be paid for", "account balance: $"),
             checks=(wrote_nothing("tasks"),)),
        Step("novita-async run tasks.jsonl --out tasks --no-progress",
             sent=TASK_JOBS, stdout=("5 jobs: 5 succeeded, 0 failed",),
             checks=(ran_the_task_jobs("tasks"),)),
        Step("novita-async run tasks.jsonl --out tasks --task-rate txt2img=40 "
             "--task-rate img2img=20 --no-progress",
             sent=0, stdout=("5 jobs: 5 succeeded, 0 failed, 5 from an earlier run",),
             checks=(ran_the_task_jobs("tasks"),)),
        # Three jobs of each of the five tasks, from Python, against the docs' emulator.
        Step("python examples/mixed_tasks.py", sent=15, stdout=("15 succeeded, 0 failed",)),
    ),
    "set-up": (
        # The demo runs its own emulator in-process: no key, no network.
        Step("novita-async demo", sent=0, env={"NOVITA_API_KEY": "", "NOVITA_BASE_URL": ""},
             checks=(file_exists("novita-demo/index.html"),)),
    ),
    "exit-status": (
        Step(EXIT_STATUS_SCRIPT, sent=README_JOBS, stdout=("every job succeeded",),
             checks=(ran_the_readme_jobs("results"),)),
    ),
    # README, --dry-run, --max-tasks, --summary-json / --json, status, journal repair: one run
    # into `nightly`, looked at every way the docs show.
    "nightly": (
        # "sends nothing, writes nothing in the output folder and needs no key"
        Step("novita-async run jobs.jsonl --out nightly --dry-run --rate 10", sent=0,
             env={"NOVITA_API_KEY": ""}, stdout=("4 to submit", "5 images would be paid for"),
             checks=(wrote_nothing("nightly"),)),
        Step("novita-async run jobs.jsonl --out nightly --max-tasks 1000 || test $? -eq 4",
             sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(ran_the_readme_jobs("nightly"), keep_journal)),
        Step("novita-async run jobs.jsonl --out nightly --summary-json nightly.json --no-progress",
             sent=0, stdout=(FROM_EARLIER,),
             checks=(summary_json("nightly.json", jobs=4, succeeded=4, submitted=0),)),
        Step("novita-async run jobs.jsonl --out nightly --json > nightly.json 2> nightly.log",
             sent=0, checks=(summary_json("nightly.json", jobs=4, succeeded=4, submitted=0),
                             progress_in("nightly.log"))),
        Step("novita-async status nightly", sent=0,
             stdout=("nightly: journal nightly/.novita-journal.jsonl", "(5 images on disk)")),
        Step("novita-async status nightly --jobs jobs.jsonl --json", sent=0, checks=(status_json,)),
        # "--verify also hashes each image against the SHA-256 the journal recorded"
        Step("novita-async status nightly --verify", sent=0, stdout=("(5 images verified)",)),
        # "On a sound journal it changes nothing"
        Step("novita-async journal repair nightly", sent=0, checks=(journal_unchanged,)),
    ),
    "object-storage": (
        Step(OBJECT_STORAGE_BLOCK, sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(stored_the_readme_jobs("portraits"),)),
    ),
    # README, "Shards on Ray", and docs/scale-out.md: one local Ray instance; a scenario for
    # each command (they share nothing but Ray), so that parallel workers can share them out.
    # The three "--shards 16" scenarios take about 20 s each, over the suite's 20 s: each starts
    # sixteen shard actors (a Ray worker process apiece) on two cores, and they run as the docs
    # write them, since "more shards than jobs" is a case they show (12 shards with no job).
    "ray-local": (
        Step("novita-async run jobs.jsonl --out out/ --ray --shards 4 --rate 8        "
             "# a local Ray instance",
             sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(ran_the_readme_jobs("out"), shards("out", 4))),
    ),
    "ray-shared-folder": (
        Step("novita-async run jobs.jsonl --out /shared/out --ray --ray-address HOST:6379 "
             "--shards 16 --rate 8",
             sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(ran_the_readme_jobs("shared/out"), shards("shared/out", 16))),
    ),
    "ray-object-storage": (
        Step("novita-async run jobs.jsonl --out s3://bucket/run --ray --ray-address HOST:6379 "
             "--shards 16",
             sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(stored_the_readme_jobs("run"), shards("run", 16, stored=True))),
    ),
    "ray-cluster": (
        Step(SCALE_OUT_COMMAND, sent=README_JOBS, stdout=(READ_EVERYTHING,),
             checks=(stored_the_readme_jobs("run-42"), shards("run-42", 4, stored=True))),
    ),
    # README, "Shards on Ray", in Python: the same local Ray instance, a folder of its own.
    "ray-python": (
        Step(RUN_SHARDED_SNIPPET, kind="python", sent=README_JOBS,
             stdout=("succeeded=4",),
             checks=(ran_the_readme_jobs("out", gallery=False), shards("out", 4))),
    ),
    # README, "The emulator": serves until Ctrl-C, first printing where it listens.
    "emulator": (
        Step("novita-async emulator --task-seconds 2 --fault submit:error_5xx=0.05 "
             "--script result:503,429,ok",
             kind="long-running"),
    ),
}  # fmt: skip


def substitute(text: str, services: Services) -> str:
    fields = services.fields()
    for placeholder, replacement in SUBSTITUTIONS.items():
        if placeholder in text:
            text = text.replace(placeholder, replacement.format(**fields))
    return text


# --- what the docs show is what the steps run -----------------------------------------------------


def test_the_extractor_tells_commands_from_shown_output() -> None:
    text = (
        "novita-async run jobs.jsonl --out a \\\n    --no-progress || status=$?\n"
        "9 jobs: 4 succeeded, 5 failed; ...\n"
        "novita-async: error: run stopped\n"
        'ASSET=$(novita-async upload face.png) && echo "uploaded as $ASSET"\n'
        "X=1 novita-async status a --json > a.json 2> a.log\n"
        "python3 -m venv .venv && .venv/bin/novita-async demo\n"
        "$ novita-async models   # a comment\n"
        '{"id": "novita-async x"}\n'
    )
    assert commands(text) == [
        "novita-async run jobs.jsonl --out a --no-progress",
        "novita-async upload face.png",
        "novita-async status a --json",
        "novita-async demo",
        "novita-async models",
    ]


def test_every_documented_command_is_run() -> None:
    documented = documented_commands()
    stepped = {
        command for steps in SCENARIOS.values() for step in steps for command in commands(step.text)
    }
    missing = {command: where for command, where in documented.items() if command not in stepped}
    assert missing == {}, "documented commands no step of SCENARIOS runs"
    assert stepped - set(documented) == set(), "steps of commands the docs no longer show"


def test_each_step_is_written_as_the_docs_write_it() -> None:
    blocks = [body for _, _, body in fenced_blocks()]
    lines = {line for body in blocks for line in logical_lines(body)}
    for steps in SCENARIOS.values():
        for step in steps:
            # A step is a whole block, or lines of one, verbatim (continuations as shown).
            assert (
                any(step.text in body for body in blocks) or set(logical_lines(step.text)) <= lines
            ), step.text


def test_every_line_of_the_readme_shell_blocks_is_run() -> None:
    """`sh` blocks are commands to paste: every line runs (the setup and benchmark ones are
    test_readme's; only the demo of the set-up line is run here)."""
    stepped = {
        line for steps in SCENARIOS.values() for step in steps for line in logical_lines(step.text)
    }
    for name, info, body in fenced_blocks():
        if info in ("sh", "sh long-running"):
            assert set(logical_lines(body)) <= stepped, (name, body)


# --- running them ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_emulator() -> Iterator[EmulatorProcess]:
    with emulator_process("--task-seconds", "0.05", "--image-mode", "tiny") as running:
        yield running


@pytest.fixture(scope="module")
def docs_ray(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local Ray instance for every Ray command; its address (HOST:PORT)."""
    import ray

    # A node's environment: the store's credentials (never sent by the driver) and a staging
    # folder of its own.
    node_env = {**s3_env(s3_server), "NOVITA_ASYNC_STAGING": str(tmp_path_factory.mktemp("node"))}
    with pytest.MonkeyPatch.context() as env:
        for name, value in node_env.items():
            env.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def scratch_folder(folder: Path) -> None:
    """The pictures and the job file the docs name."""
    (folder / "faces").mkdir()
    (folder / "refs").mkdir()
    for face in SAMPLE_FACES[:2]:
        (folder / "faces" / f"{face.name}.png").write_bytes(draw_face(face, 96))
    for scene in (SAMPLE_SCENES[0], SAMPLE_SCENES[2]):
        (folder / "refs" / f"{scene.name}.png").write_bytes(draw_scene(scene, 96))
    (folder / "face.png").write_bytes(draw_face(SAMPLE_FACES[0], 96))
    (folder / "ref.png").write_bytes(draw_scene(SAMPLE_SCENES[1], 96))
    (folder / "masks").mkdir()
    Image.new("L", (96, 96), 0).save(folder / "masks" / "beach.png")  # refs/beach.png's size
    # A `jsonl NAME` block is the job file NAME; a bare `jsonl` one is jobs.jsonl.
    for _, info, body in fenced_blocks():
        kind, _, name = info.partition(" ")
        if kind == "jsonl":
            (folder / (name or "jobs.jsonl")).write_text(body, encoding="utf-8")


def environment(services: Services, *, s3: bool) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "NOVITA_", "RAY_ADDRESS"))
    }
    env |= services.emulator.env
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT)  # examples/ import their _support from ROOT/examples
    env["NOVITA_ASYNC_STAGING"] = str(services.scratch / "staging")
    if services.ray_address is not None:
        env["RAY_ADDRESS"] = services.ray_address
    if s3 and services.bucket is not None:
        env |= services.bucket.env
    return env


# A Python fragment that awaits (README: `summary = await run_sharded(jobs, ...)`): run as a
# script in the scratch folder, `jobs` being the README's job file, then its summary printed.
AWAIT_FRAGMENT = """\
import ast, asyncio, json
from novita_async import InstantIDRequest, Job

jobs = []
for n, line in enumerate(open("jobs.jsonl", encoding="utf-8"), 1):
    fields = json.loads(line)
    jobs.append(Job(id=str(fields.pop("id", n)), face_images=fields.pop("face_images"),
                    ref_images=fields.pop("ref_images"), request=InstantIDRequest(**fields)))
code = compile(FRAGMENT, "<docs>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"jobs": jobs}
asyncio.run(eval(code, namespace))
print(namespace["summary"])
"""


def run_step(step: Step, services: Services) -> Ran:
    text = substitute(step.text, services)
    env = environment(services, s3="s3://" in step.text and "AWS_ACCESS_KEY_ID" not in step.text)
    for name, value in step.env.items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    if step.kind == "python":
        script = f"FRAGMENT = {text!r}\n{AWAIT_FRAGMENT}"
        argv = [sys.executable, "-c", script]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", text]
    before = services.emulator.stats()["submissions"]
    done = subprocess.run(
        argv, cwd=services.scratch, env=env, capture_output=True, text=True, timeout=300
    )
    return Ran(done, services.emulator.stats()["submissions"] - before, services)


def run_long_running(step: Step, services: Services) -> None:
    process = subprocess.Popen(
        ["bash", "-c", "exec " + step.text],
        cwd=services.scratch, env=environment(services, s3=False),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        printed = [process.stdout.readline() for _ in range(3)]
        # README: "prints the variables that point a client at it, ready to paste into a shell"
        names = [line.split("=", 1)[0] for line in printed]
        assert names == ["NOVITA_BASE_URL", "NOVITA_ASSETS_URL", "NOVITA_API_KEY"], printed
        assert printed[0].startswith("NOVITA_BASE_URL=http://127.0.0.1:"), printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def uses_ray(scenario: str) -> bool:
    return any("--ray" in s.text or "novita_async.ray" in s.text for s in SCENARIOS[scenario])


@pytest.mark.parametrize(
    "scenario",
    [
        # Ray's scenarios on one worker (with the suite's other Ray tests): one Ray at a time.
        pytest.param(name, marks=[pytest.mark.xdist_group("ray")] if uses_ray(name) else [])
        for name in SCENARIOS
    ],
)
def test_documented_commands(
    scenario: str, tmp_path: Path, docs_emulator: EmulatorProcess, request: pytest.FixtureRequest
) -> None:
    scratch_folder(tmp_path)
    bucket = None
    if any("s3://" in step.text for step in SCENARIOS[scenario]):
        s3_server = request.getfixturevalue("s3_server")
        bucket = create_bucket(s3_server, f"docs-{scenario}")
    ray_address = request.getfixturevalue("docs_ray") if uses_ray(scenario) else None
    services = Services(tmp_path, docs_emulator, bucket, ray_address)
    for step in SCENARIOS[scenario]:
        if step.kind == "long-running":
            run_long_running(step, services)
            continue
        ran = run_step(step, services)
        shown = f"{step.text}\n--- stdout\n{ran.done.stdout}\n--- stderr\n{ran.done.stderr}"
        assert ran.done.returncode == step.exit, shown
        assert "Traceback" not in ran.done.stderr, shown
        if step.sent is not None:
            assert ran.sent == step.sent, shown
        for expected in step.stdout:
            assert expected in ran.done.stdout, shown
        for check in step.checks:
            check(ran)


# --- a command the README shows in prose ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_run_with_webhooks_at_a_public_url(tmp_path: Path, docs_emulator: EmulatorProcess) -> None:
    """README, "Webhooks in a batch": `novita-async run ... --webhook-listen HOST:PORT
    [--webhook-url PUBLIC_URL]` ends its tasks by the service's events; polling only
    reconciles."""
    scratch_folder(tmp_path)
    port = free_port()
    services = Services(tmp_path, docs_emulator)
    before = docs_emulator.stats()
    step = Step(
        f"novita-async run jobs.jsonl --out hooks --no-progress "
        f"--webhook-listen 127.0.0.1:{port} --webhook-url http://127.0.0.1:{port}"
    )
    ran = run_step(step, services)
    after = docs_emulator.stats()
    assert ran.done.returncode == 0, ran.done.stderr + ran.done.stdout
    assert READ_EVERYTHING in ran.done.stdout
    ran_the_readme_jobs("hooks")(ran)
    assert after["webhooks"]["delivered"] - before["webhooks"]["delivered"] == README_JOBS
    polls = sum(after["requests"].get("result", {}).values()) - sum(
        before["requests"].get("result", {}).values()
    )
    assert polls < README_JOBS  # the events did the work: not even one poll per job
