"""The command line read into one typed, frozen settings object per command (:func:`parse`).

Argparse only converts each flag's text; the settings check the whole (a rule between two flags
sees both) and a refusal names the flags as typed, with exit status 2. Request flags are named
after the API's fields and have no defaults of their own (left out: the line's value, else the
model's); each is a default only for the tasks whose request types have its field
(:class:`TaskDefaults`), and checked against each of them. ``run``'s batch flags are
:class:`BatchOptions`' fields, help and defaults included.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import attrs

from .. import (
    TASK_NAMES,
    TASKS,
    ClientConfig,
    ConfigurationError,
    ImageTaskRequest,
    InstantIDRequest,
    NovitaClient,
    TaskRequest,
    Timeouts,
    UpscaleRequest,
    ValidationError,
    __version__,
    _spec,
)
from .._config import ENV_API_KEY
from .._files import looks_like_url
from ..batch import BatchOptions, Shard, is_run_output


class UsageError(Exception):
    """A command line refused as a whole; the text names the flags, as the user typed them."""


# --- the settings, one class per command ------------------------------------------------------


def _path(text: str | Path | None) -> Path | None:
    return None if text is None else Path(text)


def _paths(texts: Iterable[str | Path]) -> tuple[Path, ...]:
    return tuple(Path(text) for text in texts)


def _some_paths(texts: Iterable[str | Path] | None) -> tuple[Path, ...] | None:
    return None if texts is None else _paths(texts)


@attrs.frozen(kw_only=True)
class Connection:
    """How a command reaches the API (the ``NOVITA_*`` variables fill the gaps);
    ``download_timeout`` replaces one image download's deadline, the other timeouts keep theirs."""

    api_key: str | None = attrs.field(default=None, repr=False)
    base_url: str | None = None
    assets_url: str | None = None
    download_timeout: float | None = None

    def _places(self) -> dict[str, Any]:
        timeout = self.download_timeout
        timeouts = None if timeout is None else Timeouts(download_total=timeout)
        return {"base_url": self.base_url, "assets_url": self.assets_url, "timeouts": timeouts}

    def client(self) -> NovitaClient:
        return NovitaClient(self.api_key, **self._places())

    def config(self) -> ClientConfig:
        """Resolved here, for Ray's shards in other processes."""
        return ClientConfig.resolve(self.api_key, **self._places())

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no message or report may show."""
        return (self.api_key or "", os.environ.get(ENV_API_KEY, ""))


@attrs.frozen
class ReportTo:
    """Where ``run``'s JSON report goes: ``path`` (``--summary-json``), and stdout (``--json``)."""

    path: Path | None = attrs.field(default=None, converter=_path)
    stdout: bool = False
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)

    def check(self, out: Path, inputs: tuple[Path | None, ...]) -> None:
        """Refuse now a path the report cannot be written to, or one over the run's ``inputs``
        or output: found when the run ends, it would be too late."""
        if self.path is None:
            return
        if not self.path.parent.is_dir() or self.path.is_dir():
            raise ValidationError(
                "--summary-json", str(self.path), "must be a file in an existing folder"
            )
        target = self.path.resolve()
        if is_run_output(self.path, out) or any(
            other is not None and target == other.resolve() for other in inputs
        ):
            raise ValidationError(
                "--summary-json", str(self.path), "must not be a file the run reads or writes"
            )


@attrs.frozen
class RaySettings:
    shards: int
    address: str | None = None


@attrs.frozen(kw_only=True)
class _Settings:
    debug: bool = False
    # Only for the commands that talk to the API; every one keeps its secrets out of messages.
    connection: Connection = attrs.field(factory=Connection)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.connection.secrets


@attrs.frozen(kw_only=True)
class RunSettings(_Settings):
    jobs: Path = attrs.field(converter=Path)
    out: str  # a folder, or an object-store URL (opened when the run starts)
    options: BatchOptions = attrs.field(factory=BatchOptions)
    request_defaults: Mapping[str, Any] = attrs.field(factory=dict)  # API-named, as given
    task_defaults: TaskDefaults = attrs.field(factory=lambda: TaskDefaults())  # per task
    plain: bool = False
    dry_run: bool = False
    report: ReportTo = attrs.field(factory=ReportTo)
    ray: RaySettings | None = None

    def __attrs_post_init__(self) -> None:
        webhook = self.request_defaults.get("extra", {}).get("webhook", {}).get("url")
        if self.options.webhook_listen is not None and webhook is not None:
            # A job's own webhook wins over the run's receiver (its events go there), so every
            # task would quietly be followed by polling instead.
            raise UsageError(
                "argument --webhook/--webhook-listen: --webhook sends every task's event to its "
                "URL, so the run's receiver (--webhook-listen) would get none: give one of them "
                "(behind a proxy or tunnel, --webhook-url names the receiver's public address)"
            )
        self.report.check(Path(self.out), (self.jobs, self.options.journal_path))
        if self.ray is not None and self.options.shard is not None:
            raise UsageError("argument --shard: not with --ray, which runs every shard")


@attrs.frozen(kw_only=True)
class GenerateSettings(_Settings):
    """One task: InstantID's ``faces`` and ``refs`` (uploaded), or a v3 task's ``image`` and
    ``mask_image`` (a path or URL each, sent inline), as ``request``'s task takes."""

    request: TaskRequest
    faces: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    refs: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    face_kps: tuple[Path, ...] | None = attrs.field(default=None, converter=_some_paths)
    image: str | None = None
    mask_image: str | None = None
    out: Path = attrs.field(default=Path("."), converter=Path)
    plain: bool = False

    def __attrs_post_init__(self) -> None:
        task = self.request.task
        given = {"--face": self.faces, "--ref": self.refs, "--face-kps": self.face_kps,
                 "--image": self.image, "--mask-image": self.mask_image}  # fmt: skip
        if isinstance(self.request, InstantIDRequest):
            required: tuple[str, ...] = ("--face", "--ref")
            allowed = {*required, "--face-kps"}
        else:
            inputs = self.request.input_names()
            named = (("--image", "image"), ("--mask-image", "mask_image"))
            required = tuple(flag for flag, name in named if name in inputs)
            allowed = set(required)
        for flag in required:
            if not given[flag]:
                raise UsageError(f"argument {flag}: required by --task {task}")
        for flag, value in given.items():
            if value and flag not in allowed:
                raise UsageError(f"argument {flag}: not an input of --task {task}")


@attrs.frozen(kw_only=True)
class UploadSettings(_Settings):
    files: tuple[Path, ...] = attrs.field(converter=_paths)


@attrs.frozen(kw_only=True)
class ResultSettings(_Settings):
    task_id: str
    download: Path | None = attrs.field(default=None, converter=_path)
    wait: bool = False
    json: bool = False


@attrs.frozen(kw_only=True)
class ModelsSettings(_Settings):
    sdxl: bool = False
    model_type: str | None = None
    query: str | None = None
    limit: int | None = None


@attrs.frozen(kw_only=True)
class DemoSettings(_Settings):
    out: Path = attrs.field(default=Path("novita-demo"), converter=Path)
    plain: bool = False


@attrs.frozen(kw_only=True)
class _OutputFolder(_Settings):
    """A command that reads a run's output folder (no network, no key)."""

    command: ClassVar[str]
    out: str
    journal: Path | None = attrs.field(default=None, converter=_path)

    def __attrs_post_init__(self) -> None:
        if scheme := looks_like_url(self.out):
            raise UsageError(
                f"argument OUT: {scheme}:// outputs are not read by `{self.command}` yet: it reads "
                "a local output folder (an object-store run keeps its working copy in its staging "
                "folder, under $NOVITA_ASYNC_STAGING or ~/.cache/novita-async/staging)"
            )


@attrs.frozen(kw_only=True)
class StatusSettings(_OutputFolder):
    command = "status"
    jobs: Path | None = attrs.field(default=None, converter=_path)
    json: bool = False
    verify: bool = False


@attrs.frozen(kw_only=True)
class RepairSettings(_OutputFolder):
    command = "journal"


@attrs.frozen(kw_only=True)
class EmulatorSettings(_Settings):
    args: tuple[str, ...]  # the emulator parses them itself (the parser here checked them)


Command = (
    RunSettings
    | GenerateSettings
    | UploadSettings
    | ResultSettings
    | ModelsSettings
    | DemoSettings
    | StatusSettings
    | RepairSettings
    | EmulatorSettings
)


# --- request flags ------------------------------------------------------------------------------

METAVARS: dict[object, str] = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def _unit(shape: str) -> Callable[[str], dict[str, Any]]:
    """The parser of a ``--lora`` or ``--controlnet`` value shaped ``NAME:STRENGTH[:MORE]``."""
    colons = shape.count(":")

    def parse(text: str) -> dict[str, Any]:
        parts = text.rsplit(":", colons)
        if len(parts) != colons + 1 or not parts[0]:
            raise argparse.ArgumentTypeError(f"expected {shape}, got {text!r}")
        name, strength, *preprocessor = parts
        try:
            unit: dict[str, Any] = {"model_name": name, "strength": float(strength)}
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"strength must be a number, got {strength!r}"
            ) from None
        if preprocessor:
            unit["preprocessor"] = preprocessor[0]
        return unit

    return parse


# Every request type a job line (its "task") or `generate --task` may name, by its task's name.
REQUEST_TYPES: Mapping[str, type[InstantIDRequest] | type[ImageTaskRequest]] = {
    InstantIDRequest.task: InstantIDRequest,
    **TASKS,
}
_CHECKPOINTS = tuple(task for task in REQUEST_TYPES if task != UpscaleRequest.task)


def _fields(task: str) -> dict[str, attrs.Attribute[Any]]:
    kind: Any = REQUEST_TYPES[task]  # every request type is an attrs class
    return attrs.fields_dict(kind)


def _tasks_with(field: str, only: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The tasks whose requests have ``field`` (of ``only``, if given)."""
    return tuple(
        task for task in REQUEST_TYPES if field in _fields(task) and (only is None or task in only)
    )


def _for_tasks(tasks: tuple[str, ...]) -> str:
    if len(tasks) == len(REQUEST_TYPES):
        return ""
    if tasks == _CHECKPOINTS:
        return f" [not {UpscaleRequest.task}]"
    return f" [{', '.join(tasks)}]"


@attrs.frozen
class RequestFlag:
    """One command-line flag that sets one request field (``path`` inside the JSON body), a
    default for the tasks whose requests have that field (``tasks``)."""

    flag: str
    path: tuple[str, ...]
    type: Callable[[str], Any] | None
    help: str
    metavar: str | None = None
    repeatable: bool = False
    only: tuple[str, ...] | None = None
    """The tasks it is for, where fewer than those with the field (``--model``, a checkpoint, is
    not for upscale, whose model is an upscaler: ``--upscale-model``)."""

    @property
    def dest(self) -> str:
        return "req_" + self.flag.lstrip("-").replace("-", "_")

    @property
    def tasks(self) -> tuple[str, ...]:
        return _tasks_with(self.path[0], self.only)


def _grouped(values: Mapping[str, object]) -> str:
    """``{task: value}`` said once per value: ``1024 for instant-id; 512 for txt2img, img2img``
    (just ``1024`` when every task has it)."""
    by_value: dict[str, list[str]] = {}
    for task, value in values.items():
        by_value.setdefault(str(value), []).append(task)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{value} for {', '.join(tasks)}" for value, tasks in by_value.items())


def _default(name: str, tasks: tuple[str, ...]) -> str:
    defaults = {
        task: field.default
        for task in tasks
        if (field := _fields(task)[name]).default not in (None, attrs.NOTHING)
    }
    return f" (default: {_grouped(defaults)})" if defaults else ""


def _range(task: str, name: str) -> tuple[_spec.Range, bool]:
    table = _spec.NUMERIC_FIELDS if task == InstantIDRequest.task else _spec.V3_NUMERIC_FIELDS
    return table[name]


def _numeric(
    flag: str, path: str, what: str = "", only: tuple[str, ...] | None = None
) -> RequestFlag:
    name = path.rpartition(".")[2]
    tasks = _tasks_with(path.partition(".")[0], only)
    ranges = {task: _range(task, name) for task in tasks}
    integer = all(integer for _, integer in ranges.values())
    default = _default(name, tasks) if name == path else ""
    allowed = _grouped({task: allowed for task, (allowed, _) in ranges.items()})
    text = f"{what}{', ' if what else ''}in {allowed}{default}{_for_tasks(tasks)}"
    return RequestFlag(flag, tuple(path.split(".")), int if integer else float, text, only=only)


def _choice(
    flag: str, path: str, choices: tuple[str, ...], only: tuple[str, ...] | None = None
) -> RequestFlag:
    tasks = _tasks_with(path.partition(".")[0], only)
    default = _default(path, tasks) if "." not in path else " (default: png)"
    text = f"one of: {', '.join(choices)}{default}{_for_tasks(tasks)}"
    return RequestFlag(flag, tuple(path.split(".")), str, text, only=only)


def _text(flag: str, path: str, text: str, only: tuple[str, ...] | None = None) -> RequestFlag:
    tasks = _tasks_with(path.partition(".")[0], only)
    return RequestFlag(flag, tuple(path.split(".")), str, text + _for_tasks(tasks), only=only)


_SAMPLING = _tasks_with("sampler_name")

REQUEST_FLAGS: tuple[RequestFlag, ...] = (
    _text("--prompt", "prompt", "what to generate, 1 to 1024 characters"),
    _text("--negative-prompt", "negative_prompt", "what to keep out of the image"),
    _text("--model", "model_name", "a checkpoint's sd_name (instant-id's default: "
          f"{_spec.RECOMMENDED_MODEL}; the other tasks need one)", _CHECKPOINTS),
    _choice("--upscale-model", "model_name", _spec.UPSCALE_MODELS, (UpscaleRequest.task,)),
    _numeric("--width", "width", "pixels"),
    _numeric("--height", "height", "pixels"),
    _numeric("--image-num", "image_num", "images per task"),
    _numeric("--steps", "steps", "denoising steps"),
    _numeric("--guidance-scale", "guidance_scale"),
    # Open for the v3 tasks (the SD3 guide's FlowMatchEuler is not in the documented list).
    _text("--sampler", "sampler_name", f"one of: {', '.join(_spec.SAMPLERS)}"
          f"{_default('sampler_name', _SAMPLING)}; the v3 tasks also send any other name, with "
          "a warning"),
    _numeric("--seed", "seed", "random when -1 (the service's default)"),
    _numeric("--strength", "strength", "how far from the input image; 1 all but ignores it"),
    _numeric("--mask-blur", "mask_blur", "pixels of blur at the mask's edge"),
    RequestFlag("--scale-factor", ("scale_factor",), float,
                f"how many times larger, greater than {_spec.SCALE_FACTOR_MIN_EXCLUSIVE:g} and at "
                f"most {_spec.SCALE_FACTOR_MAX:g}" + _default("scale_factor", ("upscale",))
                + _for_tasks(("upscale",))),
    _text("--sd-vae", "sd_vae", "a VAE's sd_name"),
    _numeric("--id-strength", "id_strength", "identity fidelity"),
    _numeric("--adapter-strength", "adapter_strength", "detail"),
    _numeric("--clip-skip", "clip_skip"),
    _numeric("--control-guidance-start", "control_guidance_start"),
    _numeric("--control-guidance-end", "control_guidance_end"),
    RequestFlag("--lora", ("loras",), _unit("NAME:STRENGTH"),
                f"a LoRA, repeatable up to {_spec.MAX_LORAS} times (v3 tasks: strength in [0, 1])"
                + _for_tasks(_tasks_with("loras")), "NAME:STRENGTH", repeatable=True),
    # A v3 unit needs an image of its own, which only a job line can give.
    RequestFlag("--controlnet", ("controlnet", "units"), _unit("MODEL:STRENGTH:PREPROCESSOR"),
                "a ControlNet unit, repeatable" + _for_tasks((InstantIDRequest.task,)),
                "MODEL:STRENGTH:PREPROCESSOR", repeatable=True, only=(InstantIDRequest.task,)),
    _choice("--image-type", "extra.response_image_type", _spec.IMAGE_TYPES),
    RequestFlag("--nsfw-detection", ("extra", "enable_nsfw_detection"), None,
                "ask the service to check images for NSFW content"),
    _numeric("--nsfw-detection-level", "extra.nsfw_detection_level", "0 is strictest"),
    RequestFlag("--webhook", ("extra", "webhook", "url"), str,
                "a URL the service calls when a task ends", "URL"),
)  # fmt: skip


def _add_request_flags(parser: argparse.ArgumentParser, *, generate: bool) -> None:
    group = parser.add_argument_group(
        "request fields",
        "named after the API's fields; [tasks]: a flag only for those tasks"
        + ("" if generate else "; defaults for the job lines of those tasks"),
    )
    for spec in REQUEST_FLAGS:
        kind: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        if spec.type is not None:
            kind = {
                "type": spec.type,
                "metavar": spec.metavar or METAVARS.get(spec.type, "TEXT"),
                "action": "append" if spec.repeatable else "store",
            }
        group.add_argument(spec.flag, dest=spec.dest, default=None, help=spec.help, **kind)


def _request_fields(
    values: Mapping[str, Any], task: str | None = None, flags: Iterable[RequestFlag] = REQUEST_FLAGS
) -> dict[str, Any]:
    """The request fields the flags set, nested and API-named: for ``task``, those of its flags."""
    fields: dict[str, Any] = {}
    for spec in flags:
        if (value := values.get(spec.dest)) is None or (task and task not in spec.tasks):
            continue
        target = fields
        for key in spec.path[:-1]:
            target = target.setdefault(key, {})
        target[spec.path[-1]] = value
    return fields


def _flag_for(field: str, task: str) -> RequestFlag | None:
    path = tuple(re.sub(r"\[\d+\]", "", field).split("."))
    for spec in REQUEST_FLAGS:
        if task in spec.tasks and (
            path[: len(spec.path)] == spec.path or spec.path[: len(path)] == path
        ):
            return spec
    return None


class _Quiet(logging.Filter):
    """Drops the model's warnings while the flags are tried on stand-in requests (an unlisted
    sampler would be warned about once per task and flag); the job lines still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _built(task: str, fields: Mapping[str, Any]) -> TaskRequest:
    """The ``task`` request of ``fields``, or :class:`ValidationError` naming the flag, not the
    field, of the refused value; the fields a request requires and no flag gave are stand-ins."""
    kind = REQUEST_TYPES[task]
    required = {"prompt": "a prompt", "model_name": _spec.UPSCALE_MODELS[0]}
    names = _fields(task)
    stand_ins = {
        name: value
        for name, value in required.items()
        if name in names and name not in fields and names[name].default is attrs.NOTHING
    }
    try:
        return kind.from_dict({**stand_ins, **fields})
    except ValidationError as exc:
        flag = _flag_for(exc.field, task)
        raise ValidationError(flag.flag if flag else exc.field, exc.value, exc.allowed) from None


def _request(task: str, fields: Mapping[str, Any]) -> TaskRequest:
    """``generate``'s request: the flags' fields alone, required ones included (a missing one is
    refused, naming its flag)."""
    try:
        return REQUEST_TYPES[task].from_dict(fields)
    except ValidationError as exc:
        flag = _flag_for(exc.field, task)
        raise UsageError(
            f"argument {flag.flag if flag else exc.field}: {exc.value!r} is not allowed: "
            f"{exc.allowed}" + (f" (--task {task})" if task != InstantIDRequest.task else "")
        ) from None


@attrs.frozen
class TaskDefaults:
    """The request flags of ``run`` per task: ``fields`` the defaults of each task's job lines
    (a flag only for the tasks whose requests have its field), ``refused`` the tasks for which a
    flag's value is not allowed (by flag, value and what is): a job file with a line of such a
    task is refused before anything is sent. A value no task allows is refused at once."""

    fields: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    refused: Mapping[str, ValidationError] = attrs.field(factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> TaskDefaults:
        given = [spec for spec in REQUEST_FLAGS if values.get(spec.dest) is not None]
        quiet = _Quiet()
        models = logging.getLogger("novita_async")
        models.addFilter(quiet)
        try:
            for spec in given:  # each flag alone: one no task allows is a usage error now
                refusals: list[ValidationError] = []
                for task in spec.tasks:
                    try:
                        _built(task, _request_fields(values, task, (spec,)))
                    except ValidationError as exc:
                        refusals.append(exc)
                if refusals and len(refusals) == len(spec.tasks):
                    first = refusals[0]
                    raise UsageError(
                        f"argument {first.field}: {first.value!r} is not allowed: {first.allowed}"
                    )
            fields = {task: _request_fields(values, task, given) for task in REQUEST_TYPES}
            refused: dict[str, ValidationError] = {}
            for task, some in fields.items():
                try:
                    _built(task, some)
                except ValidationError as exc:
                    refused[task] = exc
        finally:
            models.removeFilter(quiet)
        return cls({task: some for task, some in fields.items() if some}, refused)

    def check(self, tasks: Mapping[str, int], where: str) -> None:
        """Refuse the flags' defaults if a task of the job file (``tasks``: its lines by task)
        does not allow one of them."""
        for task, count in tasks.items():
            if (exc := self.refused.get(task)) is not None:
                lines = "line" if count == 1 else "lines"
                raise ValidationError(
                    f"argument {exc.field}",
                    exc.value,
                    f"{exc.allowed}, for {task} requests ({count} {lines} of {where})",
                )


# --- batch flags ----------------------------------------------------------------------------------


@attrs.frozen
class BatchFlag:
    """One ``run`` flag that sets one :class:`BatchOptions` field (a switch if ``type`` is None)."""

    flag: str
    field: str
    type: type[Any] | None

    @property
    def option(self) -> attrs.Attribute[Any]:
        return attrs.fields_dict(BatchOptions)[self.field]


def _batch_flag(option: attrs.Attribute[Any]) -> BatchFlag:
    kind = next(t for t in typing.get_args(option.type) or (option.type,) if t is not type(None))
    flag = "--journal" if option.name == "journal_path" else f"--{option.name.replace('_', '-')}"
    if option.name == "task_rates":  # TASK=N, repeatable
        return BatchFlag("--task-rate", option.name, list)
    return BatchFlag(flag, option.name, None if kind is bool else {Shard: str}.get(kind, kind))


# A flag per field, in the fields' order, but ``poll`` (a policy of five delays).
BATCH_FLAGS: tuple[BatchFlag, ...] = tuple(
    _batch_flag(option)
    for option in attrs.fields(attrs.resolve_types(BatchOptions))
    if option.name != "poll"
)


def _converter(kind: type[Any], *, positive: bool = False) -> Any:
    """A flag's ``type=``: the text converted only; the fields' validators judge the value once
    every flag is read (one flag alone is a half-built object to a rule between fields)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"{text} is not allowed: must be > 0")
        return value

    return parse


def _add_batch_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch options", "the batch runner's options (BatchOptions)")
    for spec in BATCH_FLAGS:
        option, help = spec.option, spec.option.metadata["help"]
        kind: dict[str, Any] = {"action": "store_true"}
        if spec.type is list:
            kind = {"action": "append", "metavar": "TASK=N"}
        elif spec.type is not None:
            kind = {"type": _converter(spec.type), "metavar": METAVARS[spec.type]}
            help += "" if option.default is None else f" (default: {option.default:g})"
        group.add_argument(spec.flag, dest=spec.field, default=None, help=help, **kind)


def _options(values: Mapping[str, Any]) -> BatchOptions:
    """The options the batch flags set (a flag left out keeps the field's default), or
    :class:`UsageError` naming the flag, or flags, whose values the fields refuse."""
    given = {spec.field: values[spec.field] for spec in BATCH_FLAGS}
    try:
        return BatchOptions(**{name: value for name, value in given.items() if value is not None})
    except ConfigurationError as exc:
        message = str(exc)
    where = {s: m.start() for s in BATCH_FLAGS if (m := re.search(rf"\b{s.field}\b", message))}
    named = sorted(where, key=where.__getitem__)
    if not named:
        raise UsageError(f"batch options: {message}")
    if len(named) == 1:
        value = given[named[0].field]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise UsageError(f"argument {named[0].flag}: {shown} is not allowed: {message}")
    # A rule between fields: said in the flags' names, which a command-line user typed.
    for spec in named:
        message = re.sub(rf"\b{spec.field}\b", spec.flag, message)
    raise UsageError(f"argument {'/'.join(spec.flag for spec in named)}: {message}")


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
        type=_converter(int, positive=True),
        default=None,
        metavar="K",
        help="shards (Ray actors) for --ray; an output folder keeps its number of shards",
    )


def _ray(values: Mapping[str, Any]) -> RaySettings | None:
    if not values["ray"]:
        if values["shards"] is not None or values["ray_address"] is not None:
            raise UsageError("argument --shards/--ray-address: needs --ray")
        return None
    if values["shards"] is None:
        raise UsageError("argument --ray: needs --shards K")
    return RaySettings(values["shards"], values["ray_address"])


# --- the parser ---------------------------------------------------------------------------------


def _add_download_timeout(parser: argparse.ArgumentParser) -> None:
    default = attrs.fields(Timeouts).download_total.default
    shown = "none" if default is None else f"{default:g}"
    parser.add_argument(
        "--download-timeout",
        type=_converter(float, positive=True),
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


GENERATE_EPILOG = """\
examples:
  novita-async generate --face me.png --ref scene.png --prompt "a portrait, golden hour"
  novita-async generate --task txt2img --model sd_xl_base_1.0.safetensors \\
      --prompt "a lighthouse at dusk" --width 768 --height 512
  novita-async generate --task img2img --model sd_xl_base_1.0.safetensors \\
      --prompt "an oil painting" --image photo.png --strength 0.6
  novita-async generate --task inpainting --model sd_xl_base_1.0.safetensors \\
      --prompt "a red hat" --image photo.png --mask-image mask.png --mask-blur 4
  novita-async generate --task upscale --upscale-model RealESRNet_x4plus \\
      --image photo.png --scale-factor 2
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the whole usage block: the request flags alone fill a screen.
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _add_out_and_journal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the run's output folder")
    parser.add_argument(
        "--journal", default=None, metavar="PATH", help="the run's journal if not OUT's"
    )


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
        description="Novita AI's image tasks (InstantID, txt2img, img2img, inpainting, upscale) "
        "from the command line: one task, or thousands, resumable.",
    )
    # Its own dest: a subcommand's `--debug` default would otherwise overwrite this one.
    parser.add_argument(
        "--debug", dest="debug_anywhere", action="store_true", help=argparse.SUPPRESS
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, settings: type[Command], help: str, *parents: _Parser, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common, *parents],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(subparser=sub, settings=settings)
        return sub

    run = command("run", RunSettings, "run every job of a JSONL job file; rerun to resume",
                  connection, epilog=RUN_EPILOG)  # fmt: skip
    run.add_argument("jobs", metavar="JOBS.jsonl", help="one JSON job object per line")
    run.add_argument("--out", required=True, metavar="DIR|URL", help="output folder (images, "
                     "results), or an object store: s3://BUCKET/PREFIX, gs://..., az://... "
                     "(credentials from the environment, as obstore reads them)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", dest="plain",
                     help="plain log lines, no progress bar")  # fmt: skip
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
    _add_request_flags(run, generate=False)

    generate = command(
        "generate",
        GenerateSettings,
        "one task end to end: submit (InstantID: after uploading its images), wait, download",
        connection,
        epilog=GENERATE_EPILOG,
    )
    inputs = generate.add_argument_group("the task and its input images")
    inputs.add_argument("--task", choices=TASK_NAMES, default=InstantIDRequest.task,
                        help=f"the task (default: {InstantIDRequest.task})")  # fmt: skip
    inputs.add_argument("--face", action="append", default=[], metavar="FILE", dest="faces",
                        help="face image, repeatable [instant-id: required]")  # fmt: skip
    inputs.add_argument("--ref", action="append", default=[], metavar="FILE", dest="refs",
                        help="reference image, repeatable [instant-id: required]")  # fmt: skip
    inputs.add_argument("--face-kps", action="append", default=None, metavar="FILE",
                        help="face keypoints image, one per --face [instant-id]")  # fmt: skip
    inputs.add_argument("--image", default=None, metavar="FILE|URL",
                        help="the input image [img2img, inpainting, upscale: required]",
                        )  # fmt: skip
    inputs.add_argument("--mask-image", default=None, metavar="FILE|URL",
                        help="the mask of what to repaint, of --image's size "
                        "[inpainting: required]")  # fmt: skip
    generate.add_argument("--out", default=".", metavar="DIR", help="where images go (default: .)")
    generate.add_argument(
        "--no-progress", action="store_true", dest="plain", help="no progress line"
    )
    _add_download_timeout(generate)
    _add_request_flags(generate, generate=True)

    upload = command(
        "upload", UploadSettings, "upload images; prints one asset id per file", connection
    )
    upload.add_argument("files", nargs="+", metavar="FILE")

    result = command("result", ResultSettings, "show a task's result", connection)
    result.add_argument("task_id", metavar="TASK_ID")
    result.add_argument("--download", metavar="DIR", default=None, help="save its images here")
    result.add_argument("--wait", action="store_true", help="wait until the task has ended")
    result.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_download_timeout(result)

    models = command("models", ModelsSettings, "list models (sd_name per line)", connection)
    models.add_argument("--sdxl", action="store_true", help="SDXL models only")
    models.add_argument("--type", choices=_spec.MODEL_TYPES, default=None, dest="model_type")
    models.add_argument("--query", default=None, metavar="Q", help="search text")
    models.add_argument(
        "--limit", type=_converter(int, positive=True), default=None,
        help="at most this many",
    )  # fmt: skip

    emulator = command(
        "emulator", EmulatorSettings, "run the local emulator of the API until interrupted"
    )
    try:
        from ..emulator._cli import add_arguments
    except ImportError:  # the emulator needs the [emulator] extra (Pillow)
        pass
    else:
        add_arguments(emulator)

    demo = command("demo", DemoSettings, "generate a dozen pictures against the built-in emulator")
    demo.add_argument("--out", default="novita-demo", metavar="DIR",
                      help="output folder (default: ./novita-demo)")  # fmt: skip
    demo.add_argument("--no-progress", action="store_true", dest="plain", help="plain log lines")

    status = command(
        "status", StatusSettings, "where the run of an output folder stands (no network, no key)"
    )
    _add_out_and_journal(status)
    status.add_argument("--jobs", default=None, metavar="JOBS.jsonl",
                        help="the run's job file: also count its jobs never submitted")  # fmt: skip
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--verify",
        action="store_true",
        help="hash every image of the succeeded jobs against the SHA-256 the journal recorded; "
        "exit 1 if one is missing or damaged",
    )

    journal = command("journal", RepairSettings, "look after a run's journal: `journal repair OUT`")
    actions = journal.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    repair = actions.add_parser(
        "repair",
        parents=[common],
        help="keep every good record of a damaged journal; mark the jobs whose records were "
        "lost as of unknown outcome",
        description="Keep every good record of OUT's damaged journal, mark the jobs whose "
        "records were lost as of unknown outcome (SUBMIT_OUTCOME_UNKNOWN: never sent again "
        "unless --retry-unknown-submits), and keep the damaged original beside it.",
    )
    _add_out_and_journal(repair)
    return parser


def _settings(values: Mapping[str, Any], argv: Sequence[str]) -> Command:
    """The settings ``values`` (argparse's, named after the settings' fields) make."""
    given = dict(values, debug=bool(values["debug"] or values["debug_anywhere"]))
    given["connection"] = connection = Connection(
        **{name: values.get(name) for name in attrs.fields_dict(Connection)}
    )
    match values["command"]:
        case "run":
            given.update(
                options=_options(values),
                request_defaults=_request_fields(values),
                task_defaults=TaskDefaults.of(values),  # the flags checked, lines aside
                report=ReportTo(values["summary_json"], values["json"], connection.secrets),
                ray=_ray(values),
            )
        case "generate":
            task = values["task"]
            for spec in REQUEST_FLAGS:
                if values.get(spec.dest) is not None and task not in spec.tasks:
                    raise UsageError(
                        f"argument {spec.flag}: not a field of --task {task} "
                        f"(it is for: {', '.join(spec.tasks)})"
                    )
            given["request"] = _request(task, _request_fields(values, task))
        case "emulator":
            # The emulator parses its own options; --debug is ours (and changes nothing there).
            rest = argv[list(argv).index("emulator") + 1 :]
            given["args"] = tuple(arg for arg in rest if arg != "--debug")
    make: type[Command] = values["settings"]
    return make(**{name: given[name] for name in attrs.fields_dict(make)})


def parse(argv: Sequence[str]) -> Command:
    """The settings ``argv`` asks for; bad usage (an out-of-range request flag, two flags that
    do not go together) exits with status 2, in one line naming the flags."""
    values = vars(build_parser().parse_args(argv))
    parser: _Parser = values["subparser"]
    try:
        return _settings(values, argv)
    except UsageError as exc:
        parser.error(str(exc))
    except ValidationError as exc:
        parser.error(f"argument {exc.field}: {exc.value!r} is not allowed: {exc.allowed}")
