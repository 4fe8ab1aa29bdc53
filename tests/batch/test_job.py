"""Job construction and job id checks (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novita_async import InstantIDRequest, ValidationError
from novita_async.batch import (
    InvalidJob,
    Job,
    JobError,
    JobInputError,
    JobOutcome,
    JobStatus,
    check_job_id,
)

REQUEST = InstantIDRequest(prompt="a portrait")


@pytest.mark.parametrize(
    "job_id",
    ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "C:x", ".hidden", "results.jsonl", "a\nb",
     "a\x9b2J", "\x85", "x" * 201],
)  # fmt: skip
def test_ids_that_escape_or_collide_are_refused(job_id: str) -> None:
    with pytest.raises(JobInputError) as info:
        check_job_id(job_id)
    assert info.value.reason == "INVALID_JOB_ID"


@given(st.text(alphabet=st.characters(blacklist_characters="/\\.", blacklist_categories=["Cc"])))
def test_plain_names_are_accepted_and_stay_inside(job_id: str) -> None:
    if not job_id or len(job_id) > 200 or job_id == "results.jsonl" or job_id[1:2] == ":":
        return
    check_job_id(job_id)
    out = Path("/out")
    assert (out / job_id).parent == out


def test_single_sources_are_not_split_into_characters() -> None:
    job = Job(id="a", face_images="face.png", ref_images=b"\x89PNG", request=REQUEST)
    assert job.face_images == ("face.png",)
    assert job.ref_images == (b"\x89PNG",)


def test_repr_shows_byte_sizes_not_bytes() -> None:
    job = Job(id="a", face_images=[b"x" * 1000], ref_images=[Path("r.png")], request=REQUEST)
    assert "<1000 bytes>" in repr(job) and "xxxx" not in repr(job)


def test_wrong_types_fail_at_construction() -> None:
    with pytest.raises(TypeError):
        Job(id="a", face_images=[1], ref_images=["r"], request=REQUEST)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Job(id="a", face_images=["f"], ref_images=["r"], request={"prompt": "x"})  # type: ignore[arg-type]


def test_job_error_from_exception_uses_the_reason_tag() -> None:
    error = JobError.from_exception(JobInputError("INPUT_NOT_FOUND", "missing"))
    assert (error.type, error.reason, error.message) == (
        "JobInputError",
        "INPUT_NOT_FOUND",
        "missing",
    )
    assert JobError.from_exception(KeyError("k")).reason == "KEYERROR"


def test_statuses_are_enums_equal_to_their_json_values() -> None:
    ok = JobOutcome("a", "succeeded")
    failed = JobOutcome("b", JobStatus.FAILED, error=JobError("E", "R", "m"))
    assert ok.status is JobStatus.SUCCEEDED and ok.status == "succeeded" and ok.ok
    assert failed.status is JobStatus.FAILED and not failed.ok
    with pytest.raises(ValueError):
        JobOutcome("c", "maybe")


def test_an_invalid_job_carries_its_error_and_has_no_request() -> None:
    error = ValidationError("steps", 500, "must be in [1, 100]")
    invalid = InvalidJob("line-3", error)
    assert (invalid.id, invalid.error) == ("line-3", error)
    assert not hasattr(invalid, "request")
    with pytest.raises(TypeError):
        InvalidJob("x", ValueError("not a NovitaError"))  # type: ignore[arg-type]
