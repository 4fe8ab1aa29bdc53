"""Public names read as the package's: ``novita_async.RateLimitError``, not a private module."""

from __future__ import annotations

import inspect
import pickle
import traceback

import novita_async
from novita_async import batch
from novita_async._converter import structure


def _classes_and_functions(module: object, names: list[str]) -> dict[str, object]:
    found = {name: getattr(module, name) for name in names}
    return {
        name: obj for name, obj in found.items() if isinstance(obj, type) or inspect.isfunction(obj)
    }


def test_every_public_name_belongs_to_the_package() -> None:
    public = _classes_and_functions(novita_async, novita_async.__all__)
    assert len(public) > 40
    assert {name: obj.__module__ for name, obj in public.items()} == dict.fromkeys(
        public, "novita_async"
    )


def test_batch_names_belong_to_the_package_they_are_imported_from() -> None:
    public = _classes_and_functions(batch, batch.__all__)
    expected = {
        name: "novita_async" if name in novita_async.__all__ else "novita_async.batch"
        for name in public
    }
    assert {name: obj.__module__ for name, obj in public.items()} == expected
    assert batch.JobInputError.__module__ == "novita_async.batch"


def test_a_traceback_names_the_public_class() -> None:
    error = novita_async.RateLimitError(429, reason="RATE_LIMITED", retry_after=2.0)
    line = traceback.format_exception_only(error)[-1]
    assert line.startswith("novita_async.RateLimitError: 429 RATE_LIMITED")


def test_errors_and_models_survive_pickling() -> None:
    error = novita_async.RateLimitError(429, reason="RATE_LIMITED", retry_after=2.0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is novita_async.RateLimitError
    assert (copy.status, copy.retry_after, str(copy)) == (429, 2.0, str(error))
    # Whole, whatever their __init__ takes (a Ray shard's error reaches the driver pickled).
    stopped = novita_async.RunStoppedError(
        novita_async.StorageError("refused", reason="STORAGE_PERMISSION", url="s3://b/k"),
        what="the store refused",
        fix="check it",
        tasks_submitted=2,
    )
    for error in (stopped, novita_async.ValidationError("steps", 0, "1 to 100")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.reason, str(copy)) == (type(error), error.reason, str(error))
    assert pickle.loads(pickle.dumps(stopped)).cause.url == "s3://b/k"
    for model in (
        novita_async.RetryPolicy(attempts=5),
        novita_async.InstantIDRequest(prompt="a portrait", steps=30),
        novita_async.TaskStatus.SUCCEED,
    ):
        assert pickle.loads(pickle.dumps(model)) == model


def test_answers_still_parse_into_relabelled_models() -> None:
    # attrs annotations are strings resolved in the defining module, before the relabelling.
    answer = {
        "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
        "images": [{"image_url": "https://x/a.png", "image_type": "png"}],
        "extra": {"seed": "12"},
    }
    result = structure(answer, novita_async.TaskResult)
    assert result.status is novita_async.TaskStatus.SUCCEED
    assert result.images[0].image_url == "https://x/a.png"


def test_the_failure_policys_public_names() -> None:
    # Users meet these as a RunStoppedError's cause or a JobOutcome's error; ExitStatus is what
    # the command line exits with.
    assert issubclass(novita_async.RetriesExhaustedError, novita_async.NovitaError)
    assert issubclass(novita_async.BudgetReachedError, novita_async.NovitaError)
    assert issubclass(novita_async.OutageError, novita_async.NovitaError)
    assert {status.name: int(status) for status in novita_async.ExitStatus} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "STOPPED": 3,
        "BUDGET": 4,
        "INTERRUPTED": 130,
    }
    assert novita_async.RetryPolicy.__module__ == "novita_async"


def test_the_job_file_reader_and_the_request_from_fields_are_public() -> None:
    assert {"read_jobs", "count_jobs", "job_ids"} <= set(batch.__all__)
    request = novita_async.InstantIDRequest.from_dict({"prompt": "p"}, defaults={"steps": 30})
    assert request == novita_async.InstantIDRequest(prompt="p", steps=30)
