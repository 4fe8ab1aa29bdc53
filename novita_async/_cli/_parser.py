"""The ``novita-async`` command line: subcommands, request flags and their validation.

Request flags are named after the API's fields (``--width`` for ``width``, ``--image-type`` for
``extra.response_image_type``) and hold no defaults of their own: a flag left out means "the line's
value, else the model's default", and the help shows the model's default. Ranges are checked by the
models themselves (:mod:`novita_async._spec`), then reported against the flag that set them.

The run command's batch flags are :class:`BatchOptions`' fields in the same way: one flag per
field, its help, default and validation the field's; :func:`options_from_args` builds the options.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from .. import ConfigurationError, InstantIDRequest, Timeouts, ValidationError, __version__, _spec
from ..batch import BatchOptions
from ._fields import build_request
from ._journal_cmd import add_journal_arguments
from ._run_report import ReportTo
from ._status import add_status_arguments

__all__ = [
    "BATCH_FLAGS",
    "REQUEST_FLAGS",
    "RUN_EPILOG",
    "BatchFlag",
    "RequestFlag",
    "build_parser",
    "options_from_args",
    "parse_args",
    "request_fields",
]


def _lora(text: str) -> dict[str, Any]:
    name, sep, strength = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:STRENGTH, got {text!r}")
    try:
        return {"model_name": name, "strength": float(strength)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {strength!r}") from None


def _controlnet(text: str) -> dict[str, Any]:
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected MODEL:STRENGTH:PREPROCESSOR, got {text!r}")
    name, strength, preprocessor = parts
    try:
        return {"model_name": name, "strength": float(strength), "preprocessor": preprocessor}
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength must be a number, got {strength!r}") from None


@attrs.frozen
class RequestFlag:
    """One command-line flag that sets one request field (``path`` inside the JSON body)."""

    flag: str
    path: tuple[str, ...]
    type: Callable[[str], Any] | None
    help: str
    metavar: str | None = None
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return "req_" + self.flag.lstrip("-").replace("-", "_")


def _default(name: str) -> str:
    default = attrs.fields_dict(InstantIDRequest)[name].default
    return f" (default: {default})" if default is not None else ""


def _numeric(flag: str, path: str, what: str = "") -> RequestFlag:
    name = path.rpartition(".")[2]
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    default = _default(name) if name == path else ""
    text = f"{what}{', ' if what else ''}in {allowed}{default}"
    return RequestFlag(flag, tuple(path.split(".")), int if integer else float, text)


def _choice(flag: str, path: str, choices: tuple[str, ...], default: str) -> RequestFlag:
    return RequestFlag(flag, tuple(path.split(".")), str, f"one of: {', '.join(choices)}{default}")


REQUEST_FLAGS: tuple[RequestFlag, ...] = (
    RequestFlag("--prompt", ("prompt",), str, "what to generate, 1 to 1024 characters"),
    RequestFlag("--negative-prompt", ("negative_prompt",), str, "what to keep out of the image"),
    RequestFlag("--model", ("model_name",), str,
                "an SDXL checkpoint's sd_name" + _default("model_name")),
    _numeric("--width", "width", "pixels"),
    _numeric("--height", "height", "pixels"),
    _numeric("--image-num", "image_num", "images per task"),
    _numeric("--steps", "steps", "denoising steps"),
    _numeric("--guidance-scale", "guidance_scale"),
    _choice("--sampler", "sampler_name", _spec.SAMPLERS, _default("sampler_name")),
    _numeric("--seed", "seed", "random when -1 (the service's default)"),
    _numeric("--id-strength", "id_strength", "identity fidelity"),
    _numeric("--adapter-strength", "adapter_strength", "detail"),
    _numeric("--clip-skip", "clip_skip"),
    _numeric("--control-guidance-start", "control_guidance_start"),
    _numeric("--control-guidance-end", "control_guidance_end"),
    RequestFlag("--lora", ("loras",), _lora, f"a LoRA, repeatable up to {_spec.MAX_LORAS} times",
                "NAME:STRENGTH", repeatable=True),
    RequestFlag("--controlnet", ("controlnet", "units"), _controlnet,
                "a ControlNet unit, repeatable", "MODEL:STRENGTH:PREPROCESSOR", repeatable=True),
    _choice("--image-type", "extra.response_image_type", _spec.IMAGE_TYPES, " (default: png)"),
    RequestFlag("--nsfw-detection", ("extra", "enable_nsfw_detection"), None,
                "ask the service to check images for NSFW content"),
    _numeric("--nsfw-detection-level", "extra.nsfw_detection_level", "0 is strictest"),
    RequestFlag("--webhook", ("extra", "webhook", "url"), str,
                "a URL the service calls when a task ends", "URL"),
)  # fmt: skip


@attrs.frozen
class BatchFlag:
    """One ``run`` flag that sets one :class:`BatchOptions` field (a switch if ``type`` is None)."""

    flag: str
    field: str
    type: type[Any] | None

    @property
    def option(self) -> attrs.Attribute[Any]:
        return attrs.fields_dict(BatchOptions)[self.field]


# Every field but ``poll``, a policy of five delays. ``--journal`` keeps its documented name.
BATCH_FLAGS: tuple[BatchFlag, ...] = (
    BatchFlag("--concurrency", "concurrency", int),
    BatchFlag("--rate", "rate", float),
    BatchFlag("--journal", "journal_path", Path),
    BatchFlag("--retry-failed", "retry_failed", None),
    BatchFlag("--fail-fast", "fail_fast", None),
    BatchFlag("--upload-concurrency", "upload_concurrency", int),
    BatchFlag("--poll-concurrency", "poll_concurrency", int),
    BatchFlag("--task-timeout", "task_timeout", float),
    BatchFlag("--journal-fsync", "journal_fsync", None),
    BatchFlag("--submit-concurrency", "submit_concurrency", int),
    BatchFlag("--stop-grace", "stop_grace", float),
    BatchFlag("--max-outage", "max_outage", float),
    BatchFlag("--retry-after-cap", "retry_after_cap", float),
    BatchFlag("--retry-unknown-submits", "retry_unknown_submits", None),
    BatchFlag("--max-tasks", "max_tasks", int),
    BatchFlag("--webhook-listen", "webhook_listen", str),
    BatchFlag("--webhook-url", "webhook_url", str),
)

_METAVARS: dict[object, str] = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def _add_request_flags(parser: argparse.ArgumentParser, *, prompt_required: bool) -> None:
    group = parser.add_argument_group(
        "request fields",
        "named after the API's fields" + ("" if prompt_required else "; defaults for job lines"),
    )
    for spec in REQUEST_FLAGS:
        if spec.type is None:
            group.add_argument(spec.flag, dest=spec.dest, action=argparse.BooleanOptionalAction,
                               default=None, help=spec.help)  # fmt: skip
            continue
        group.add_argument(
            spec.flag,
            dest=spec.dest,
            type=spec.type,
            default=None,
            metavar=spec.metavar or _METAVARS.get(spec.type, "TEXT"),
            action="append" if spec.repeatable else "store",
            required=prompt_required and spec.flag == "--prompt",
            help=spec.help,
        )


def request_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The request fields the flags set, as a nested API-named dict (unset flags are absent)."""
    fields: dict[str, Any] = {}
    for spec in REQUEST_FLAGS:
        value = getattr(ns, spec.dest, None)
        if value is None:
            continue
        target = fields
        for key in spec.path[:-1]:
            target = target.setdefault(key, {})
        target[spec.path[-1]] = value
    return fields


def _flag_for(field: str) -> str | None:
    path = tuple(re.sub(r"\[\d+\]", "", field).split("."))
    for spec in REQUEST_FLAGS:
        if path[: len(spec.path)] == spec.path or spec.path[: len(path)] == path:
            return spec.flag
    return None


def _check_request_flags(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    fields = request_fields(ns)
    try:
        build_request({"prompt": "placeholder", **fields})
    except ValidationError as exc:
        flag = _flag_for(exc.field) or exc.field
        parser.error(f"argument {flag}: {exc.value!r} is not allowed: {exc.allowed}")


def _check_summary_path(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    # Here, not when the run ends: a report must never land on a file the run reads or writes.
    try:
        ReportTo.from_args(ns).check(Path(ns.out), (Path(ns.jobs), ns.journal_path))
    except ValidationError as exc:
        parser.error(f"argument {exc.field}: {exc.value!r} is not allowed: {exc.allowed}")


def _option_value(spec: BatchFlag) -> Callable[[str], Any]:
    """Parse a batch flag's text and check it with its field's own validators."""
    assert spec.type is not None
    kind = spec.type

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        try:
            BatchOptions(**{spec.field: value})
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(f"{text} is not allowed: {exc}") from None
        return value

    return parse


def _add_batch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch options", "the batch runner's options (BatchOptions)")
    for spec in BATCH_FLAGS:
        option = spec.option
        if spec.type is None:
            group.add_argument(spec.flag, dest=spec.field, action="store_true", default=None,
                               help=option.metadata["help"])  # fmt: skip
            continue
        default = "" if option.default is None else f" (default: {option.default:g})"
        group.add_argument(
            spec.flag,
            dest=spec.field,
            type=_option_value(spec),
            default=None,
            metavar=_METAVARS[spec.type],
            help=option.metadata["help"] + default,
        )


def options_from_args(ns: argparse.Namespace) -> BatchOptions:
    """The batch options the ``run`` flags set; a flag left out keeps the field's default."""
    values = vars(ns)
    given = {spec.field: values[spec.field] for spec in BATCH_FLAGS}
    return BatchOptions(**{name: value for name, value in given.items() if value is not None})


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} is not allowed: must be > 0")
        return value

    return parse


def _add_download_timeout(parser: argparse.ArgumentParser) -> None:
    default = attrs.fields(Timeouts).download_total.default
    shown = "none" if default is None else f"{default:g}"
    parser.add_argument(
        "--download-timeout",
        type=_positive(float),
        default=None,
        metavar="SECONDS",
        help="seconds one attempt at downloading an image may take in all, however steadily "
        f"its bytes trickle in (default: {shown})",
    )


RUN_EPILOG = """\
exit status:
  0    every job succeeded
  1    some jobs failed for their own reason, or ended retryable (the summary
       says what each reason means and what to run next)
  2    bad usage or invalid input, found before anything was sent
  3    the run stopped for a run-level cause (the key, the account, the
       endpoint, this machine's disk, an outage longer than --max-outage); one
       line names it and the fix; nothing is recorded against the jobs it did
       not finish, and the same command continues the run
  4    the run spent its --max-tasks budget: the tasks it paid for finished;
       the same command continues (with a budget of its own)
  130  interrupted (Ctrl-C, SIGTERM); the same command continues the run

Ctrl-C once stops the run: nothing new is submitted, and submissions awaiting
their answer get --stop-grace seconds to be answered and recorded. Twice: says
how many still await their answer, and keeps waiting. Three times: abandons
them, each reported as SUBMIT_OUTCOME_UNKNOWN (a task may exist and be billed).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the whole usage block: the request flags alone fill a screen.
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    connection = _Parser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument(
        "--api-key",
        default=None,
        help="API key; prefer the NOVITA_API_KEY variable (flags show up in process lists)",
    )
    group.add_argument("--base-url", default=None, help="API origin (env NOVITA_BASE_URL)")
    group.add_argument(
        "--assets-url", default=None, help="asset upload URL (env NOVITA_ASSETS_URL)"
    )

    parser = _Parser(
        prog="novita-async",
        description="Novita AI InstantID from the command line: one task, or thousands, resumable.",
    )
    # Its own dest: a subcommand's `--debug` default would otherwise overwrite this one.
    parser.add_argument(
        "--debug", dest="debug_anywhere", action="store_true", help=argparse.SUPPRESS
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, *parents: _Parser, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common, *parents],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(subparser=sub)
        return sub

    run = command("run", "run every job of a JSONL job file; rerun to resume", connection,
                  epilog=RUN_EPILOG)  # fmt: skip
    run.add_argument("jobs", metavar="JOBS.jsonl", help="one JSON job object per line")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder (images, results)")
    run.add_argument("--no-progress", action="store_true", help="plain log lines, no progress bar")
    run.add_argument("--summary-json", default=None, metavar="PATH", help="also write how the "
                     "run ended (summary, exit status) as JSON to PATH")  # fmt: skip
    run.add_argument("--json", action="store_true", help="print that JSON on stdout instead of "
                     "the text summary (progress lines go to stderr)")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="read and check every line as a run "
                     "would, send nothing, and say what the run would do and pay for (exit 1 if "
                     "some lines cannot run)")  # fmt: skip
    _add_download_timeout(run)
    _add_batch_flags(run)
    _add_request_flags(run, prompt_required=False)

    generate = command("generate", "one task end to end: upload, submit, wait, download",
                       connection)  # fmt: skip
    generate.add_argument("--face", action="append", required=True, metavar="FILE",
                          help="face image, repeatable")  # fmt: skip
    generate.add_argument("--ref", action="append", required=True, metavar="FILE",
                          help="reference image, repeatable")  # fmt: skip
    generate.add_argument("--face-kps", action="append", default=None, metavar="FILE",
                          help="face keypoints image, one per --face")  # fmt: skip
    generate.add_argument("--out", default=".", metavar="DIR", help="where images go (default: .)")
    generate.add_argument("--no-progress", action="store_true", help="no progress line")
    _add_download_timeout(generate)
    _add_request_flags(generate, prompt_required=True)

    upload = command("upload", "upload images; prints one asset id per file", connection)
    upload.add_argument("files", nargs="+", metavar="FILE")

    result = command("result", "show a task's result", connection)
    result.add_argument("task_id", metavar="TASK_ID")
    result.add_argument("--download", metavar="DIR", default=None, help="save its images here")
    result.add_argument("--wait", action="store_true", help="wait until the task has ended")
    result.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_download_timeout(result)

    models = command("models", "list models (sd_name per line)", connection)
    models.add_argument("--sdxl", action="store_true", help="SDXL models only")
    models.add_argument("--type", choices=_spec.MODEL_TYPES, default=None, dest="model_type")
    models.add_argument("--query", default=None, metavar="Q", help="search text")
    models.add_argument("--limit", type=_positive(int), default=None, help="at most this many")

    emulator = command("emulator", "run the local emulator of the API until interrupted")
    _add_emulator_arguments(emulator)

    demo = command("demo", "generate a dozen pictures against the built-in emulator")
    demo.add_argument("--out", default="novita-demo", metavar="DIR",
                      help="output folder (default: ./novita-demo)")  # fmt: skip
    demo.add_argument("--no-progress", action="store_true", help="plain log lines")

    status = command("status", "where the run of an output folder stands (no network, no key)")
    add_status_arguments(status)
    journal = command("journal", "look after a run's journal: `journal repair OUT`")
    add_journal_arguments(journal, common)
    return parser


def _add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        from ..emulator._cli import add_arguments
    except ImportError:  # the emulator needs the [emulator] extra (Pillow)
        return
    add_arguments(parser)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; bad usage (including an out-of-range request flag) exits with status 2."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.debug = ns.debug or ns.debug_anywhere
    if ns.command in ("run", "generate"):
        _check_request_flags(ns.subparser, ns)
    if ns.command == "run":
        _check_summary_path(ns.subparser, ns)
    return ns
