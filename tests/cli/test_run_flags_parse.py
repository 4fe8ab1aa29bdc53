"""Random valid sets of ``run`` flags, in any order, parse to the settings the Python API makes of
the same values: ``BatchOptions(**values)`` for the batch flags (``BATCH_FLAGS``), and for the
request flags (``REQUEST_FLAGS``) each task's defaults, whose request is the task's request type
built from the same values (``InstantIDRequest(**fields)``, ``Txt2ImgRequest(**fields)``...), or
refused for that task when the Python API refuses them.
Parse-only: nothing is sent, no file is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from novita_async import BatchOptions, InstantIDRequest, ValidationError, _spec
from novita_async._cli._settings import BATCH_FLAGS, REQUEST_FLAGS, RunSettings, parse
from novita_async._models import TASK_NAMES, TASKS, merge_fields
from novita_async.batch import Shard
from novita_async.batch._jobs import build_request

# A drawn flag: its command-line words, and the value the Python API is given for it.
Drawn = tuple[list[str], Any]

_FINITE = {"allow_nan": False, "allow_infinity": False}


def _number(kind: type, low: float, *, above: bool = False) -> st.SearchStrategy[Any]:
    if kind is int:
        return st.integers(int(low) + above, 10**6)
    return st.floats(low, 1e9, exclude_min=above, **_FINITE)


def _valued(
    flag: str, values: st.SearchStrategy[Any], text: Any = repr
) -> st.SearchStrategy[Drawn]:
    # "--flag=TEXT": a value starting with "-" stays the flag's.
    return values.map(lambda value: ([f"{flag}={text(value)}"], value))


def _switch(flag: str) -> st.SearchStrategy[Drawn]:
    return st.booleans().map(lambda on: ([flag] if on else [], on))


_HOSTS = st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "::1", "my-host.example"])
_URLS = st.from_regex(r"https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[A-Za-z0-9._~-]{0,12}){0,3}",
                      fullmatch=True)  # fmt: skip
_PATHS = st.from_regex(r"[A-Za-z0-9_.-]{1,12}(/[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True).filter(
    lambda text: text not in (".", "..")
)

# One strategy per batch flag, by field; switches are off (absent) or on.
BATCH: dict[str, st.SearchStrategy[Drawn]] = {
    "concurrency": _valued("--concurrency", _number(int, 1)),
    "rate": _valued("--rate", _number(float, 0, above=True)),
    "task_rates": st.dictionaries(
        st.sampled_from(TASK_NAMES), _number(float, 0, above=True), min_size=1
    ).map(lambda rates: ([f"--task-rate={t}={r!r}" for t, r in rates.items()], rates)),
    "max_inline_bytes": _valued("--max-inline-bytes", _number(int, 1)),
    "journal_path": _valued("--journal", _PATHS, str),
    "retry_failed": _switch("--retry-failed"),
    "fail_fast": _switch("--fail-fast"),
    "upload_concurrency": _valued("--upload-concurrency", _number(int, 1)),
    "poll_concurrency": _valued("--poll-concurrency", _number(int, 1)),
    "task_timeout": _valued("--task-timeout", _number(float, 0, above=True)),
    "journal_fsync": _switch("--journal-fsync"),
    "submit_concurrency": _valued("--submit-concurrency", _number(int, 1)),
    "stop_grace": _valued("--stop-grace", _number(float, 0)),
    "max_outage": _valued("--max-outage", _number(float, 0)),
    "retry_after_cap": _valued("--retry-after-cap", _number(float, 0)),
    "retry_unknown_submits": _switch("--retry-unknown-submits"),
    "max_tasks": _valued("--max-tasks", _number(int, 1)),
    "webhook_listen": _valued(
        "--webhook-listen",
        st.tuples(_HOSTS, st.integers(0, 65535)).map("{0[0]}:{0[1]}".format),
        str,
    ),
    "webhook_url": _valued("--webhook-url", _URLS, str),
    "staging_dir": _valued("--staging-dir", _PATHS, str),
    "shard": st.integers(1, 64)
    .flatmap(lambda count: st.tuples(st.integers(0, count - 1), st.just(count)))
    .map(lambda shard: ([f"--shard={shard[0]}/{shard[1]}"], Shard(*shard))),
}


def _in_range(name: str) -> st.SearchStrategy[Any]:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    high = allowed.high if allowed.high is not None else 10**9
    if integer:
        return st.integers(int(allowed.low), int(high))
    return st.floats(allowed.low, high, **_FINITE)


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
_NAME = st.from_regex(r"[A-Za-z0-9_.:-]*[A-Za-z0-9_.-]", fullmatch=True)
_STRENGTH = st.floats(-10, 10, **_FINITE)
_LORA = st.tuples(_NAME, _STRENGTH)
_UNIT = st.tuples(_NAME, _STRENGTH, st.sampled_from(_spec.CONTROLNET_PREPROCESSORS))


def _repeated(flag: str, items: st.SearchStrategy[Any], high: int, text: Any) -> Any:
    return st.lists(items, min_size=1, max_size=high).map(
        lambda drawn: ([f"{flag}={text(item)}" for item in drawn], drawn)
    )


# One strategy per request flag: (words, value at the flag's path in the request's fields).
REQUEST: dict[str, st.SearchStrategy[Drawn]] = {
    "--prompt": _valued("--prompt", _TEXT, str),
    "--negative-prompt": _valued("--negative-prompt", _TEXT, str),
    "--model": _valued("--model", st.sampled_from(_spec.SDXL_CHECKPOINTS), str),
    # A name off the documented list too: the v3 tasks send it, InstantID refuses it.
    "--sampler": _valued("--sampler", st.sampled_from((*_spec.SAMPLERS, "FlowMatchEuler")), str),
    "--upscale-model": _valued("--upscale-model", st.sampled_from(_spec.UPSCALE_MODELS), str),
    "--sd-vae": _valued("--sd-vae", _NAME, str),
    "--strength": _valued("--strength", st.floats(0, 1, **_FINITE)),
    "--mask-blur": _valued("--mask-blur", st.integers(0, 64)),
    "--scale-factor": _valued(
        "--scale-factor",
        st.floats(
            _spec.SCALE_FACTOR_MIN_EXCLUSIVE, _spec.SCALE_FACTOR_MAX, exclude_min=True, **_FINITE
        ),
    ),
    "--image-type": _valued("--image-type", st.sampled_from(_spec.IMAGE_TYPES), str),
    "--nsfw-detection": st.booleans().map(
        lambda on: (["--nsfw-detection" if on else "--no-nsfw-detection"], on)
    ),
    "--webhook": _valued("--webhook", _URLS, str),
    "--lora": _repeated(
        "--lora", _LORA, _spec.MAX_LORAS, lambda lora: f"{lora[0]}:{lora[1]!r}"
    ).map(lambda drawn: (drawn[0], [{"model_name": n, "strength": s} for n, s in drawn[1]])),
    "--controlnet": _repeated("--controlnet", _UNIT, 3, lambda u: f"{u[0]}:{u[1]!r}:{u[2]}").map(
        lambda drawn: (
            drawn[0],
            [{"model_name": n, "strength": s, "preprocessor": p} for n, s, p in drawn[1]],
        )
    ),
    **{
        spec.flag: _valued(spec.flag, _in_range(spec.path[-1]))
        for spec in REQUEST_FLAGS
        if spec.path[-1] in _spec.NUMERIC_FIELDS
    },
}


def test_every_flag_has_a_strategy() -> None:
    assert set(BATCH) == {spec.field for spec in BATCH_FLAGS}
    assert set(REQUEST) == {spec.flag for spec in REQUEST_FLAGS}


Fields = dict[str, Any]


def _put(fields: Fields, path: tuple[str, ...], value: Any) -> None:
    *parents, name = path
    for key in parents:
        fields = fields.setdefault(key, {})
    fields[name] = value


@st.composite
def flag_sets(draw: st.DrawFn) -> tuple[list[str], dict[str, Any], dict[str, Fields]]:
    """Valid flags in a random order; the BatchOptions keywords they mean, and the request fields
    they mean for each task whose requests have their fields."""
    groups: list[list[str]] = []
    options: dict[str, Any] = {}
    for field in sorted(draw(st.sets(st.sampled_from(sorted(BATCH))))):
        if field == "webhook_url" and "webhook_listen" not in options:
            continue  # invalid alone; the set is drawn in sorted order, listen before url
        words, value = draw(BATCH[field])
        groups.append(words)
        options[field] = value
    by_task: dict[str, Fields] = {task: {} for task in TASK_NAMES}
    by_flag = {spec.flag: spec for spec in REQUEST_FLAGS}
    for flag in sorted(draw(st.sets(st.sampled_from(sorted(REQUEST))))):
        if flag == "--webhook" and "webhook_listen" in options:
            continue  # refused together: the run's receiver would get no event
        words, value = draw(REQUEST[flag])
        groups.append(words)
        for task in by_flag[flag].tasks:
            _put(by_task[task], by_flag[flag].path, value)
    order = draw(st.permutations(groups))
    return [word for group in order for word in group], options, by_task


# What a job line of each task gives itself (a v3 request needs its model; upscale's is its own).
LINES: dict[str, Fields] = {
    "instant-id": {"prompt": "a line's own prompt"},
    **{task: {"prompt": "a line's own prompt", "model_name": "m.safetensors"}
       for task in ("txt2img", "img2img", "inpainting")},
    "upscale": {},
}  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(flag_sets())
def test_flags_parse_to_what_the_python_api_makes_of_the_same_values(
    drawn: tuple[list[str], dict[str, Any], dict[str, Fields]],
) -> None:
    argv, options, by_task = drawn
    run = parse(["run", "jobs.jsonl", "--out", "out", *argv])
    assert isinstance(run, RunSettings)
    assert run.options == BatchOptions(**options)
    # Each task gets the flags of its fields, and no other (no InstantID width on an upscale).
    assert run.task_defaults.fields == {task: f for task, f in by_task.items() if f}
    for task, fields in by_task.items():
        line = dict(LINES[task])
        if task == "upscale" and "model_name" not in fields:
            line["model_name"] = _spec.UPSCALE_MODELS[0]
        # The request the Python API makes of the same values, or its refusal, which the
        # command line keeps for the job files with a line of this task.
        kind = InstantIDRequest if task == "instant-id" else TASKS[task]
        try:
            expected = kind(**{**fields, **line})
        except ValidationError:
            assert task in run.task_defaults.refused, (task, fields)
            continue
        assert task not in run.task_defaults.refused, run.task_defaults.refused[task]
        defaults = run.task_defaults.fields.get(task, {})
        if task == "instant-id":
            assert build_request(merge_fields(defaults, line)) == expected
        else:
            assert kind.from_dict(line, defaults=defaults) == expected
    assert run.jobs == Path("jobs.jsonl") and Path(run.out) == Path("out")
