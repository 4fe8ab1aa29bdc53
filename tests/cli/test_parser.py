"""Command-line parsing: request flags, their ranges (from _spec), and usage errors (exit 2)."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import BatchOptions, Timeouts, _spec
from novita_async._cli import main
from novita_async._cli._settings import (
    BATCH_FLAGS,
    REQUEST_FLAGS,
    GenerateSettings,
    ResultSettings,
    RunSettings,
    parse,
)

BASE = ["generate", "--face", "f.png", "--ref", "r.png", "--prompt", "a portrait"]

NUMERIC_FLAGS = [
    (flag.flag, flag.path[-1])
    for flag in REQUEST_FLAGS
    if flag.path[-1] in _spec.NUMERIC_FIELDS and flag.flag != "--lora"
]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_every_numeric_field_has_a_flag() -> None:
    assert {name for _, name in NUMERIC_FLAGS} == set(_spec.NUMERIC_FIELDS)


def outside(name: str) -> st.SearchStrategy[str]:
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    low, high = allowed.low, allowed.high
    if integer:
        below = st.integers(max_value=int(low) - 1)
        above = st.integers(min_value=int(high) + 1) if high is not None else st.nothing()
    else:
        below = st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False)
        above = (
            st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False)
            if high is not None
            else st.nothing()
        )
    return st.one_of(below, above).map(repr)


@given(data=st.data())
def test_out_of_range_flag_exits_2_naming_flag_and_range(data: st.DataObject) -> None:
    flag, name = data.draw(st.sampled_from(NUMERIC_FLAGS))
    value = data.draw(outside(name))
    status, out, err = run_main([*BASE, f"{flag}={value}"])
    allowed, _ = _spec.NUMERIC_FIELDS[name]
    assert status == 2
    assert f"argument {flag}:" in err
    assert str(allowed) in err
    assert "Traceback" not in err and out == ""


@given(data=st.data())
def test_in_range_flags_are_accepted(data: st.DataObject) -> None:
    flag, name = data.draw(st.sampled_from(NUMERIC_FLAGS))
    allowed, integer = _spec.NUMERIC_FIELDS[name]
    high = allowed.high if allowed.high is not None else 10**6
    if integer:
        value: float = data.draw(st.integers(int(allowed.low), int(high)))
    else:
        value = data.draw(st.floats(allowed.low, high, allow_nan=False))
    # Through `run`, whose settings keep the fields the flags set as given.
    fields = dict(run_settings(["run", "jobs.jsonl", "--out", "o", f"{flag}={value!r}"])
                  .request_defaults)  # fmt: skip
    target = fields.get("extra", fields) if name == "nsfw_detection_level" else fields
    assert math.isclose(target[name], value)
    # And through `generate`, whose settings hold the request they build.
    request = parse([*BASE, f"{flag}={value!r}"])
    assert isinstance(request, GenerateSettings)
    built = request.request.extra if name == "nsfw_detection_level" else request.request
    assert math.isclose(getattr(built, name), value)


@pytest.mark.parametrize(
    ("extra", "flag", "allowed"),
    [
        (["--sampler", "Nope"], "--sampler", "Euler a"),
        (["--image-type", "gif"], "--image-type", "png, jpeg, webp"),
        (["--prompt", ""], "--prompt", "[1, 1024]"),
        (["--prompt", "x" * 1025], "--prompt", "[1, 1024]"),
        (["--lora", "a:inf"], "--lora", "finite"),
        ([f"--lora=l{i}:0.5" for i in range(6)], "--lora", "at most 5"),
        (["--lora", "no-strength"], "--lora", "NAME:STRENGTH"),
        (["--controlnet", "cn:0.4:nope"], "--controlnet", "openpose"),
        (["--width", "abc"], "--width", "invalid int"),
        (["--steps", "2.5"], "--steps", "invalid int"),
    ],
)
def test_bad_request_flags(extra: list[str], flag: str, allowed: str) -> None:
    status, _, err = run_main([*BASE, *extra])
    assert status == 2
    assert f"argument {flag}" in err and allowed in err
    assert err.count("\n") == 1  # one line, no usage block


def test_run_options_are_checked() -> None:
    for option in ("--concurrency=0", "--rate=-1", "--concurrency=x"):
        status, _, err = run_main(["run", "jobs.jsonl", "--out", "o", option])
        assert status == 2
        assert option.split("=")[0] in err


def test_defaults_come_from_the_model() -> None:
    settings = parse(["run", "jobs.jsonl", "--out", "o"])
    assert isinstance(settings, RunSettings)
    assert settings.request_defaults == {}  # unset flags leave a line's fields alone
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        parse(["generate", "--help"])
    text = " ".join(help_text.getvalue().split()).replace("instant- id", "instant-id")
    assert _spec.RECOMMENDED_MODEL[:20] in text.replace(" ", "")
    # Each task's default, where they differ: InstantID's first.
    assert "(default: 1024 for instant-id; 512 for txt2img, img2img)" in text
    assert "(default: 25 for instant-id; 20 for" in text
    assert "(default: Euler for instant-id; Euler a for" in text


def test_flags_build_nested_fields() -> None:
    settings = parse(
        ["run", "jobs.jsonl", "--out", "o", "--prompt", "a portrait",
         "--lora", "style:v1.safetensors:0.7", "--image-type", "jpeg",
         "--no-nsfw-detection", "--controlnet", "cn-openpose:0.4:openpose", "--seed=-1"]
    )  # fmt: skip
    assert isinstance(settings, RunSettings)
    assert settings.request_defaults == {
        "prompt": "a portrait",
        "seed": -1,
        "loras": [{"model_name": "style:v1.safetensors", "strength": 0.7}],
        "controlnet": {
            "units": [{"model_name": "cn-openpose", "strength": 0.4, "preprocessor": "openpose"}]
        },
        "extra": {"response_image_type": "jpeg", "enable_nsfw_detection": False},
    }


def test_debug_flag_before_or_after_the_command() -> None:
    assert parse(["--debug", "models"]).debug
    assert parse(["models", "--debug"]).debug
    assert not parse(["models"]).debug


def run_settings(argv: list[str]) -> RunSettings:
    settings = parse(argv)
    assert isinstance(settings, RunSettings)
    return settings


def test_missing_command_and_help() -> None:
    assert run_main([])[0] == 2
    status, out, _ = run_main(["--help"])
    assert status == 0
    for command in ("run", "generate", "upload", "result", "models", "emulator", "demo"):
        assert command in out


def test_every_batch_option_but_poll_has_a_run_flag() -> None:
    fields = {field.name for field in attrs.fields(BatchOptions)}
    assert {spec.field for spec in BATCH_FLAGS} == fields - {"poll"}


def test_batch_flags_build_the_options() -> None:
    assert run_settings(["run", "jobs.jsonl", "--out", "o"]).options == BatchOptions()
    settings = run_settings(
        ["run", "jobs.jsonl", "--out", "o", "--concurrency", "3", "--rate", "2.5",
         "--journal", "j.jsonl", "--retry-failed", "--fail-fast", "--upload-concurrency", "2",
         "--poll-concurrency", "4", "--task-timeout", "30", "--journal-fsync",
         "--submit-concurrency", "1", "--stop-grace", "0", "--max-outage", "600",
         "--retry-after-cap", "5", "--retry-unknown-submits"]
    )  # fmt: skip
    assert settings.options == BatchOptions(
        concurrency=3,
        rate=2.5,
        journal_path=Path("j.jsonl"),
        retry_failed=True,
        fail_fast=True,
        upload_concurrency=2,
        poll_concurrency=4,
        task_timeout=30.0,
        journal_fsync=True,
        submit_concurrency=1,
        stop_grace=0.0,
        max_outage=600.0,
        retry_after_cap=5.0,
        retry_unknown_submits=True,
    )


def test_batch_flags_help_and_defaults_come_from_the_fields() -> None:
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        parse(["run", "--help"])
    # argparse wraps lines (at spaces and hyphens): compare without whitespace.
    text = "".join(help_text.getvalue().split())
    for spec in BATCH_FLAGS:
        field = spec.option
        shown = field.metadata["help"]
        if spec.type not in (None, list) and field.default is not None:
            shown += f" (default: {field.default:g})"
        metavar = (
            ""
            if spec.type is None
            else {int: "N", float: "X", str: "TEXT", list: "TASK=N"}.get(spec.type, "PATH")
        )
        assert "".join(f"{spec.flag} {metavar} {shown}".split()) in text


@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        ("--stop-grace=-1", "stop_grace must be a number of seconds >= 0"),
        ("--task-timeout=0", "task_timeout must be a number of seconds > 0"),
        ("--submit-concurrency=0", "submit_concurrency must be an integer >= 1"),
        ("--rate=nan", "rate must be a number of submissions per second > 0"),
        ("--poll-concurrency=1.5", "invalid int value"),
        ("--max-outage=-5", "max_outage must be a number of seconds >= 0"),
        ("--retry-after-cap=soon", "invalid float value"),
    ],
)
def test_batch_flags_are_checked_by_the_fields_validators(option: str, allowed: str) -> None:
    status, out, err = run_main(["run", "jobs.jsonl", "--out", "o", option])
    assert status == 2 and out == ""
    assert f"argument {option.split('=')[0]}:" in err and allowed in err
    assert err.count("\n") == 1


def test_run_help_documents_the_exit_statuses_and_ctrl_c() -> None:
    status, out, _ = run_main(["run", "--help"])
    assert status == 0
    text = " ".join(out.split())
    for line in (
        "0 every job succeeded",
        "1 some jobs failed for their own reason",
        "2 bad usage or invalid input, found before anything was sent",
        "3 the run stopped for a run-level cause",
        "130 interrupted",
        "Ctrl-C once stops the run",
        "Three times: abandons them, each reported as SUBMIT_OUTCOME_UNKNOWN",
    ):
        assert line in text


@pytest.mark.parametrize("command", ["run", "generate", "result"])
def test_download_timeout_sets_the_download_deadline_only(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVITA_API_KEY", "sk-test-key")
    required = {
        "run": ["jobs.jsonl", "--out", "o"],
        "generate": ["--face", "f.png", "--ref", "r.png", "--prompt", "p"],
        "result": ["task-1"],
    }[command]
    plain = parse([command, *required])
    assert isinstance(plain, RunSettings | GenerateSettings | ResultSettings)
    assert plain.connection.client().config.timeouts == Timeouts()
    timed = parse([command, *required, "--download-timeout", "90"])
    assert isinstance(timed, RunSettings | GenerateSettings | ResultSettings)
    assert timed.connection.client().config.timeouts == attrs.evolve(
        Timeouts(), download_total=90.0
    )
    status, _, err = run_main([command, *required, "--download-timeout", "0"])
    assert status == 2 and "argument --download-timeout: 0 is not allowed: must be > 0" in err
