"""Job construction and job id checks (no server)."""

from __future__ import annotations

import json
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
    count_jobs,
    job_ids,
    read_job_lines,
    read_jobs,
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


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def test_a_job_from_a_line_as_a_dict_with_paths_under_its_folder_and_defaults() -> None:
    line = {"id": "anna", "face_images": "a.png", "ref_images": ["r.png"], "prompt": "p",
            "extra": {"response_image_type": "jpeg"}}  # fmt: skip
    defaults = {"steps": 10, "extra": {"enable_nsfw_detection": True}}
    job = Job.from_dict(line, base_dir="/jobs", defaults=defaults)
    assert (job.id, job.face_images, job.ref_images) == ("anna", (Path("/jobs/a.png"),),
                                                         (Path("/jobs/r.png"),))  # fmt: skip
    assert job.face_kps_images is None
    assert job.request == InstantIDRequest.from_dict(
        {"prompt": "p", "steps": 10,
         "extra": {"response_image_type": "jpeg", "enable_nsfw_detection": True}}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ({"face_images": ["a.png"], "ref_images": ["r.png"], "prompt": "p"}, "id", "non-empty"),
        ({"id": "a/b", "face_images": ["a"], "ref_images": ["r"], "prompt": "p"}, "id",
         "path separator"),
        ({"id": "a", "ref_images": ["r.png"], "prompt": "p"}, "face_images", "required"),
        ({"id": "a", "face_images": ["a"], "ref_images": ["r"], "prompt": "p", "stpes": 3},
         "stpes", "unknown field"),
        ({"id": "a", "face_images": ["https://x/a.png"], "ref_images": ["r"], "prompt": "p"},
         "face_images[0]", "read_jobs"),
        ({"id": "a", "face_images": ["a"], "ref_images": ["r"], "prompt": "p",
          "face_image_assets_ids": ["x"]}, "face_image_assets_ids", "not asset ids"),
    ],
)  # fmt: skip
def test_a_bad_line_as_a_dict_is_a_validation_error_naming_its_field(
    line: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Job.from_dict(line, base_dir="/jobs")
    assert caught.value.field == field
    assert words in caught.value.allowed


async def test_read_jobs_yields_jobs_and_invalid_jobs_and_counts_and_names_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    good = {"face_images": ["a.png"], "ref_images": ["a.png"], "prompt": "p"}
    path = tmp_path / "jobs.jsonl"
    lines = [{**good, "id": "one"}, "", {**good, "widht": 5}, "{broken", {**good, "id": 7}]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    read = [job async for job in read_jobs(path, defaults={"steps": 30})]
    assert [type(job) for job in read] == [Job, InvalidJob, InvalidJob, Job]
    one, wrong, broken, seven = read
    assert isinstance(one, Job) and one.face_images == (tmp_path / "a.png",)
    assert one.request.steps == 30 and isinstance(seven, Job) and seven.id == "7"
    assert isinstance(wrong, InvalidJob) and wrong.id == "3"
    assert isinstance(wrong.error, JobInputError) and wrong.error.reason == "INVALID_JOB_LINE"
    assert str(wrong.error).startswith("line 3, field widht: ")
    assert isinstance(broken, InvalidJob) and "not valid JSON" in str(broken.error)
    assert count_jobs(path) == 4
    assert await job_ids(path) == {"one", "3", "4", "7"}
    # The lines unread, each under the id the run gives it (a number id as text, as the run).
    lines_read = [pair async for pair in read_job_lines(path)]
    assert [job_id for job_id, _ in lines_read] == ["one", "3", "4", "7"]
    assert lines_read[1][1] == {**good, "widht": 5} and lines_read[2][1] == {}
    assert lines_read[3][1] == good  # the id is not among the other keys


async def test_read_jobs_refuses_urls_without_a_cache_folder(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    line = {"face_images": ["https://x.invalid/a.png"], "ref_images": ["r.png"], "prompt": "p"}
    path.write_text(json.dumps(line) + "\n")
    (invalid,) = [job async for job in read_jobs(path)]
    assert isinstance(invalid, InvalidJob)
    assert "field face_images[0]: URLs are not supported here" in str(invalid.error)
