"""The ``novita-async`` command line: subcommands, their flags and the flags' validation.

Request flags are in :mod:`._request_flags`. The run command's batch flags are
:class:`BatchOptions`' fields: one flag per field, its help, default and validation the field's.
Each flag's text is only converted to its type while parsing; :func:`options_from_args` then builds
the options once, from every flag together, so that a rule between two fields (``webhook_url``
needs ``webhook_listen``) sees them both, and a value refused is reported against the flags of the
fields it names (:func:`parse_args` stores the options as ``ns.batch_options``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs

from .. import ConfigurationError, Timeouts, ValidationError, __version__, _spec
from ..batch import BatchOptions
from ..batch._destination import looks_like_url
from ._journal_cmd import add_journal_arguments
from ._request_flags import (
    METAVARS,
    add_request_flags,
    check_request_flags,
)
from ._run_report import ReportTo
from ._status import add_status_arguments

__all__ = [
    "BATCH_FLAGS",
    "RUN_EPILOG",
    "BatchFlag",
    "build_parser",
    "options_from_args",
    "parse_args",
]


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
    BatchFlag("--staging-dir", "staging_dir", Path),
    BatchFlag("--shard", "shard", str),
)


def _check_summary_path(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    # Here, not when the run ends: a report must never land on a file the run reads or writes.
    try:
        ReportTo.from_args(ns).check(Path(ns.out), (Path(ns.jobs), ns.journal_path))
    except ValidationError as exc:
        parser.error(f"argument {exc.field}: {exc.value!r} is not allowed: {exc.allowed}")


def _option_value(spec: BatchFlag) -> Callable[[str], Any]:
    """Convert a batch flag's text to its type; the fields' validators run once every flag is
    read (:func:`_checked_options`): one flag alone is a half-built object to a rule between
    fields."""
    assert spec.type is not None
    kind = spec.type

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None

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
            metavar=METAVARS[spec.type],
            help=option.metadata["help"] + default,
        )


def _add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "shards on Ray", "needs pip install 'novita-async[ray]' (see novita_async.ray)"
    )
    group.add_argument(
        "--ray",
        action="store_true",
        help="run the jobs in --shards Ray actors that share --rate, each with its own journal "
        "(a dead one is restarted and resumes); one progress display",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster to join (default: start a local Ray instance)",
    )
    group.add_argument(
        "--shards",
        type=_positive(int),
        default=None,
        metavar="K",
        help="shards (Ray actors) for --ray; an output folder keeps its number of shards",
    )


def _check_ray_flags(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    if not ns.ray:
        if ns.shards is not None or ns.ray_address is not None:
            parser.error("argument --shards/--ray-address: needs --ray")
    elif ns.shards is None:
        parser.error("argument --ray: needs --shards K")
    elif ns.shard is not None:
        parser.error("argument --shard: not with --ray, which runs every shard")


def options_from_args(ns: argparse.Namespace) -> BatchOptions:
    """The batch options the ``run`` flags set; a flag left out keeps the field's default.

    Raises :class:`ConfigurationError` for a value, or a combination, the fields refuse.
    """
    values = vars(ns)
    given = {spec.field: values[spec.field] for spec in BATCH_FLAGS}
    return BatchOptions(**{name: value for name, value in given.items() if value is not None})


def _named_flags(message: str) -> list[BatchFlag]:
    """The batch flags whose fields ``message`` names, in the order it names them."""
    found = [
        (match.start(), spec)
        for spec in BATCH_FLAGS
        if (match := re.search(rf"\b{spec.field}\b", message)) is not None
    ]
    return [spec for _, spec in sorted(found, key=lambda item: item[0])]


def _checked_options(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> BatchOptions:
    """:func:`options_from_args`, or exit 2 naming the flag (or flags) whose values are refused."""
    try:
        return options_from_args(ns)
    except ConfigurationError as exc:
        message = str(exc)
        named = _named_flags(message)
        if not named:
            parser.error(f"batch options: {message}")
        if len(named) == 1:
            value = getattr(ns, named[0].field)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            parser.error(f"argument {named[0].flag}: {shown} is not allowed: {message}")
        # A rule between fields: said in the flags' names, which a command-line user typed.
        for spec in named:
            message = re.sub(rf"\b{spec.field}\b", spec.flag, message)
        parser.error(f"argument {'/'.join(spec.flag for spec in named)}: {message}")


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
    run.add_argument("--out", required=True, metavar="DIR|URL", help="output folder (images, "
                     "results), or an object store: s3://BUCKET/PREFIX, gs://..., az://... "
                     "(credentials from the environment, as obstore reads them)")  # fmt: skip
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
    _add_ray_flags(run)
    add_request_flags(run, prompt_required=False)

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
    add_request_flags(generate, prompt_required=True)

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
        check_request_flags(ns.subparser, ns)
    if ns.command == "run":
        ns.batch_options = _checked_options(ns.subparser, ns)
        if ns.batch_options.webhook_listen is not None and ns.req_webhook is not None:
            # A job's own webhook wins over the run's receiver (its events go there), so every
            # task would quietly be followed by polling instead.
            ns.subparser.error(
                "argument --webhook/--webhook-listen: --webhook sends every task's event to its "
                "URL, so the run's receiver (--webhook-listen) would get none: give one of them "
                "(behind a proxy or tunnel, --webhook-url names the receiver's public address)"
            )
        _check_summary_path(ns.subparser, ns)
        _check_ray_flags(ns.subparser, ns)
    if ns.command in ("status", "journal") and (scheme := looks_like_url(getattr(ns, "out", ""))):
        ns.subparser.error(
            f"argument OUT: {scheme}:// outputs are not read by `{ns.command}` yet: it reads a "
            "local output folder (an object-store run keeps its working copy in its staging "
            "folder, under $NOVITA_ASYNC_STAGING or ~/.cache/novita-async/staging)"
        )
    return ns
