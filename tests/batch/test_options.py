"""BatchOptions: each option checked by its field's validators; a refused value names the option."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest

import novita_async
from novita_async import BatchOptions, ConfigurationError, PollPolicy
from novita_async.batch import BatchOptions as BatchOptionsOfBatch
from novita_async.batch._options import BATCH_POLL_POLICY

REFUSED = [
    ("concurrency", 0),
    ("concurrency", -3),
    ("concurrency", True),
    ("concurrency", 2.0),
    ("concurrency", "5"),
    ("upload_concurrency", 0),
    ("poll_concurrency", None),
    ("submit_concurrency", False),
    ("rate", 0),
    ("rate", -1),
    ("rate", True),
    ("rate", "5"),
    ("rate", math.nan),
    ("task_timeout", 0),
    ("task_timeout", -0.5),
    ("task_timeout", "30"),
    ("task_timeout", math.nan),
    ("stop_grace", -1),
    ("stop_grace", True),
    ("stop_grace", None),
    ("stop_grace", math.nan),
    ("retry_failed", 1),
    ("fail_fast", "yes"),
    ("journal_fsync", None),
    ("poll", 1.0),
]


@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_a_refused_value_raises_configuration_error_naming_the_option(
    name: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} must be "):
        BatchOptions(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=f"^{name} must be "):
        attrs.evolve(BatchOptions(), **{name: value})


def test_defaults_and_edge_values_accepted() -> None:
    options = BatchOptions()
    assert (options.concurrency, options.rate, options.journal_path) == (50, None, None)
    assert (options.retry_failed, options.fail_fast, options.journal_fsync) == (False,) * 3
    assert options.poll == BATCH_POLL_POLICY
    assert options.stop_grace == 10.0 and options.task_timeout is None
    edges = BatchOptions(rate=math.inf, task_timeout=0.5, stop_grace=0, concurrency=1)
    assert (edges.rate, edges.task_timeout, edges.stop_grace) == (math.inf, 0.5, 0)
    assert BatchOptions(journal_path="j.jsonl").journal_path == Path("j.jsonl")
    assert BatchOptions(poll=None).poll == BATCH_POLL_POLICY  # None: the batch default
    policy = PollPolicy(min_delay=0.5)
    assert BatchOptions(poll=policy).poll is policy


def test_options_are_frozen_and_every_field_documents_itself() -> None:
    options = BatchOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.concurrency = 3  # type: ignore[misc]
    assert not hasattr(options, "__dict__")  # slotted
    for field in attrs.fields(BatchOptions):
        assert field.metadata["help"].strip(), field.name


def test_public_from_the_package_and_from_batch() -> None:
    assert BatchOptionsOfBatch is BatchOptions
    assert "BatchOptions" in novita_async.__all__
    assert "BatchOptions" in novita_async.batch.__all__
