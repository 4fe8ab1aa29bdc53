"""BatchOptions: the bounds and choices of a batch run, each checked when it is set (a value
refused raises :class:`ConfigurationError` naming the option); and the shards of a run."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from .._completion import PollPolicy
from .._exceptions import ConfigurationError
from .._models import TASK_NAMES

__all__ = ["BATCH_POLL_POLICY", "BatchOptions"]

# The runner times first polls from the tasks it has seen finish (see _durations), so later polls
# are the exception: when one is needed it follows the answer closely rather than adding a
# single task's comfortable half-second margin to every job of the batch.
BATCH_POLL_POLICY = PollPolicy(min_delay=0.1, margin=0.1, initial_delay=1.0)

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


# --- shards: one run split by job id --------------------------------------------------------------

SHARDS_FOLDER = ".novita-shards"
"""Where in OUT each shard keeps its journal, results and lock (``<index>-of-<count>/``)."""


def shard_of(job_id: str, count: int) -> int:
    """The shard (0 to ``count - 1``) that runs the job ``job_id``, the same in every process."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _whole(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be an integer, got {value!r}")


def _below_count(instance: Shard, attribute: attrs.Attribute[int], index: int) -> None:
    if not 0 <= index < instance.count:
        raise ValueError(f"{attribute.name} must be 0 to count - 1, got {index!r}")


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count): the jobs whose id hashes to it."""

    # Validators run once both are set, so the index's may read the count.
    index: int = attrs.field(validator=v.and_(_whole, _below_count))
    count: int = attrs.field(validator=v.and_(_whole, v.ge(1)))

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"INDEX/COUNT"`` (``"0/4"``); ``ValueError`` otherwise."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"{text!r} is not INDEX/COUNT")
        try:
            return cls(int(index), int(count))
        except (TypeError, ValueError):
            raise ValueError(f"{text!r}: INDEX must be below COUNT and COUNT >= 1") from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """Its folder's name (in a store, key prefix) in SHARDS_FOLDER: ``<index>-of-<count>``."""
        return f"{self.index}-of-{self.count}"

    def folder(self, out_dir: Path) -> Path:
        """Where its journal, results and lock live."""
        return out_dir / SHARDS_FOLDER / self.name

    def owns(self, job_id: str) -> bool:
        return shard_of(job_id, self.count) == self.index


def _must_be(allowed: str, *validators: _Validator) -> _Validator:
    """Run ``validators``; a value they refuse raises ConfigurationError naming the option."""
    check = v.and_(*validators)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(instance, attribute, value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{attribute.name} must be {allowed}") from None

    return validate


_NUMBER: _Validator = v.and_(v.instance_of((int, float)), v.not_(v.instance_of(bool)))


def _host_port(_: Any, __: Any, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(value)


_INTEGER = (v.instance_of(int), v.not_(v.instance_of(bool)))
_COUNT = _must_be("an integer >= 1", *_INTEGER, v.ge(1))
_SWITCH = _must_be("True or False", v.instance_of(bool))
_SECONDS = _must_be("a number of seconds >= 0", _NUMBER, v.ge(0))


def _task_rates(value: Mapping[str, float] | Iterable[str] | None) -> dict[str, float]:
    """``{"txt2img": 20}``, or ``TASK=N`` texts (the command line's)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    rates: dict[str, Any] = {}
    for text in [value] if isinstance(value, str) else value:
        task, _, number = str(text).partition("=")
        try:
            rates[task.strip()] = float(number)
        except ValueError:
            rates[task.strip()] = number  # refused by the validator, naming it
    return rates


def _check_task_rates(_: object, __: attrs.Attribute[Any], value: Mapping[str, object]) -> None:
    for task, rate in value.items():
        if task not in TASK_NAMES:
            raise ConfigurationError(
                f"task_rates: {task!r} is not a task (one of {', '.join(TASK_NAMES)})"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ConfigurationError(
                f"task_rates: {task}={rate!r} must be a number of images a minute > 0"
            )


def _option(default: Any, validator: _Validator, help_text: str) -> Any:
    """A field of BatchOptions: its default, its check, and its help (the run flag's too)."""
    return attrs.field(default=default, validator=validator, metadata={"help": help_text})


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _shard_of_text(value: Shard | str | None) -> Shard | None:
    try:
        return Shard.parse(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ConfigurationError(f"shard must be INDEX/COUNT with INDEX < COUNT: {exc}") from None


def _poll_or_default(poll: PollPolicy | None) -> PollPolicy:
    return BATCH_POLL_POLICY if poll is None else poll


@attrs.frozen
class BatchOptions:
    """How a :class:`BatchRunner` runs: its bounds, its pace and what it does with failures.

    Every field has a default; ``attrs.evolve(options, concurrency=10)`` makes a variant. What
    each one does is its ``metadata["help"]`` (``attrs.fields(BatchOptions).rate.metadata``),
    which ``novita-async run --help`` shows too.
    """

    concurrency: int = _option(
        50, _COUNT, "tasks in flight at once: a job holds its place from submission to its end"
    )
    rate: float | None = _option(
        None,
        _must_be("a number of submissions per second > 0", v.optional([_NUMBER, v.gt(0)])),
        "submissions per second, evenly spaced (default: no limit)",
    )
    task_rates: Mapping[str, float] = attrs.field(
        factory=dict,
        converter=_task_rates,
        validator=_check_task_rates,
        hash=False,
        metadata={
            "help": "TASK=N: at most N images a minute to that task's endpoint, where the "
            "account knows its limits (the service's defaults: txt2img and upscale 20, img2img "
            "and inpainting 10 images a minute); each endpoint pauses on its own 429s anyway"
        },
    )
    max_inline_bytes: int = _option(
        256 << 20,
        _COUNT,
        "bytes of v3 input images (base64) held for submissions at once; an input shared by "
        "jobs in flight counts once, and one larger than this is sent alone",
    )
    journal_path: Path | None = attrs.field(
        default=None,
        converter=_optional_path,
        metadata={
            "help": "the journal, which a rerun resumes from "
            "(default: .novita-journal.jsonl in the output folder)"
        },
    )
    retry_failed: bool = _option(False, _SWITCH, "run again the jobs that failed in an earlier run")
    fail_fast: bool = _option(
        False, _SWITCH, "stop at the first job that fails in this run (not a replayed one)"
    )
    poll: PollPolicy = attrs.field(
        default=BATCH_POLL_POLICY,
        converter=_poll_or_default,
        validator=_must_be("a PollPolicy", v.instance_of(PollPolicy)),
        metadata={"help": "the delays between polls of one task"},
    )
    upload_concurrency: int = _option(
        8, _COUNT, "uploads at once, and jobs read ahead of those in flight"
    )
    poll_concurrency: int = _option(16, _COUNT, "polls at once")
    task_timeout: float | None = _option(
        None,
        _must_be("a number of seconds > 0", v.optional([_NUMBER, v.gt(0)])),
        "seconds a task may take, counted from when this run began following it "
        "(default: no limit)",
    )
    journal_fsync: bool = _option(
        False,
        _SWITCH,
        "fsync each journal record: it then survives power loss, not just a killed process; slower",
    )
    submit_concurrency: int = _option(
        8,
        _COUNT,
        "submissions sent at once, which bounds what one hard kill can cost (see the journal's "
        "note on the double-submission window)",
    )
    stop_grace: float = _option(
        10.0,
        _SECONDS,
        "seconds a stopping run still waits for the answers of submissions in flight; one still "
        "unanswered then fails as SUBMIT_OUTCOME_UNKNOWN (a task may exist), which a rerun "
        "submits again only when told to (retry_unknown_submits or retry_failed)",
    )
    max_outage: float = _option(
        300.0,
        _SECONDS,
        "seconds the API may stay unreachable (refused connections, timeouts, 5xx) while the run "
        "pauses and tries again; a longer outage stops the run, with nothing recorded failed, and "
        "a rerun continues",
    )
    retry_after_cap: float = _option(
        60.0, _SECONDS, "the longest pause a Retry-After answer may impose on the run"
    )
    retry_unknown_submits: bool = _option(
        False,
        _SWITCH,
        "submit again the jobs whose submission's outcome is unknown (sent, but the answer was "
        "lost, or the run stopped before it came): a task may exist and be billed, so this may "
        "pay twice",
    )
    max_tasks: int | None = _option(
        None,
        _must_be("an integer >= 1", v.optional([*_INTEGER, v.ge(1)])),
        "submit at most this many new tasks in this run, then stop submitting, finish the tasks "
        "in flight and stop (a rerun continues, with its own budget)",
    )
    webhook_listen: str | None = _option(
        None,
        _must_be("HOST:PORT (PORT 0 to 65535)", v.optional(_host_port)),
        "receive the service's webhooks on HOST:PORT (0: any free port): a task ends when its "
        "event arrives, and polling only catches the events that never came",
    )
    webhook_url: str | None = _option(
        None,
        _must_be("an http(s) URL", v.optional(v.matches_re(r"https?://\S+"))),
        "the public URL that reaches webhook_listen (default: http://HOST:PORT, enough when the "
        "service can reach this machine directly)",
    )
    staging_dir: Path | None = attrs.field(
        default=None,
        converter=_optional_path,
        metadata={
            "help": "an object-store output's local working folders go under this folder "
            "(default: $NOVITA_ASYNC_STAGING, else ~/.cache/novita-async/staging)"
        },
    )
    shard: Shard | None = attrs.field(
        default=None,
        converter=_shard_of_text,
        validator=_must_be("a Shard or INDEX/COUNT", v.optional(v.instance_of(Shard))),
        metadata={
            "help": "run only the jobs whose id hashes to shard INDEX of COUNT (INDEX/COUNT, "
            "e.g. 0/4), with its own journal and results under OUT/.novita-shards/; the images "
            "go to OUT (`run --ray --shards COUNT` runs every shard and merges their results)"
        },
    )

    def __attrs_post_init__(self) -> None:
        if self.webhook_url is not None and self.webhook_listen is None:
            raise ConfigurationError(
                "webhook_url needs webhook_listen: the URL must lead to the receiver this run "
                "listens with, on HOST:PORT"
            )
