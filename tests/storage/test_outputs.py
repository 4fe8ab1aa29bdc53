"""The Output interface, method by method, against a local folder and moto's S3 alike: what
differs between the two is the method's, and callers never ask which output they have."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support import S3Bucket

from novita_async import ConfigurationError, ValidationError, batch
from novita_async._cli import _gallery
from novita_async.batch import Output, Shard, _outputs, open_output
from novita_async.batch._jobs import JobStatus
from novita_async.batch._journal import ResultLine
from novita_async.batch._outputs import LocalOutput, ObjectOutput


@pytest.fixture(params=["folder", "bucket"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Output:
    if request.param == "folder":
        return open_output(tmp_path / "out")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return open_output(bucket.url("run"))


def _line(job_id: str) -> bytes:
    return ResultLine(id=job_id, status=JobStatus.SUCCEEDED, files=(f"{job_id}_0.png",)).encode()


async def _put(output: Output, key: str, data: bytes) -> None:
    """``data`` as OUT's ``key``, written where that output keeps it."""
    path = output.local_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    await output.publish_file(path, key)


def test_the_interface_is_public() -> None:
    assert (Output.__module__, open_output.__module__) == ("novita_async.batch",) * 2
    assert {"Output", "open_output"} <= set(batch.__all__)


def test_an_output_is_taken_as_it_is(tmp_path: Path) -> None:
    output = open_output(tmp_path)
    assert open_output(output) is output
    assert isinstance(output, Output) and isinstance(output, LocalOutput)


def test_the_gallery_is_named_as_the_outputs_module_knows_it() -> None:
    # The journal's and results' names have one definition (the journal module's); the
    # gallery's is the command line's, and a run's outputs must know it to keep it apart.
    assert _outputs.GALLERY_NAME == _gallery.GALLERY_NAME


async def test_published_files_are_where_location_says_and_sized(output: Output) -> None:
    output.local_dir.mkdir(parents=True)
    images = [output.local_dir / "a_0.png", output.local_dir / "a_1.png"]
    for n, image in enumerate(images):
        image.write_bytes(b"x" * (10 + n))
    await output.publish(images)
    (output.local_dir / "results.jsonl").write_bytes(b"{}\n")
    where = await output.publish_file(output.local_dir / "results.jsonl", "results.jsonl")
    assert where == output.location("results.jsonl")
    assert where == (
        str(output.local_dir / "results.jsonl")
        if isinstance(output, LocalOutput)
        else f"{output.url}/results.jsonl"
    )
    assert await output.sizes() == {"a_0.png": 10, "a_1.png": 11, "results.jsonl": 3}
    # A store's images leave staging once uploaded; a folder's are where they belong.
    assert [image.exists() for image in images] == [isinstance(output, LocalOutput)] * 2
    assert (output.local_dir / "results.jsonl").read_bytes() == b"{}\n"  # the working copy stays


async def test_sizes_are_of_files_directly_in_out(output: Output) -> None:
    assert await output.sizes() == {}  # nothing there yet, not even the folder
    await _put(output, "a_0.png", b"12345")
    await _put(output, ".novita-shards/0-of-2/results.jsonl", b"in a sub-folder")
    assert await output.sizes() == {"a_0.png": 5}


async def test_a_folders_sizes_follow_links_and_skip_what_is_no_file(tmp_path: Path) -> None:
    output = open_output(tmp_path)
    (tmp_path / "target.bin").write_bytes(b"123")
    os.symlink(tmp_path / "target.bin", tmp_path / "a_0.png")
    os.symlink(tmp_path / "gone", tmp_path / "b_0.png")  # dangling
    (tmp_path / "c_0.png").mkdir()
    assert await output.sizes() == {"target.bin": 3, "a_0.png": 3}


async def test_a_folders_journal_has_no_mirror_and_a_stores_has_one(output: Output) -> None:
    journal = output.local_dir / _outputs.JOURNAL_NAME
    mirror = output.journal_mirror(journal)
    if isinstance(output, LocalOutput):
        assert mirror is None
        return
    assert mirror is not None
    assert (mirror.key_prefix, mirror.output) == (_outputs.JOURNAL_KEY, output)
    # A shard's journal keeps its place in staging as its key; one outside staging the default.
    shard = output.local_dir / Shard(1, 2).folder(Path()) / _outputs.JOURNAL_NAME
    assert output.journal_mirror(shard).key_prefix == ".novita-shards/1-of-2/.novita-journal"
    elsewhere = output.journal_mirror(Path("/elsewhere/journal.jsonl"))
    assert elsewhere.key_prefix == _outputs.JOURNAL_KEY


async def test_an_output_keeps_its_layout(output: Output) -> None:
    await output.check_layout(Shard(0, 2))  # a new output: any layout
    await output.check_layout(None)
    await _put(output, ".novita-shards/1-of-2/results.jsonl", _line("a"))
    await output.check_layout(Shard(0, 2))
    with pytest.raises(ConfigurationError, match="holds a run in 2 shards; this run is unsharded"):
        await output.check_layout(None)
    with pytest.raises(ConfigurationError, match="in 2 shards; this run asks for 3 shards"):
        await output.check_layout(Shard(0, 3))


async def test_a_stores_layout_is_read_from_its_keys_on_a_fresh_machine(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    first = open_output(s3_bucket.url("run"), staging_dir=tmp_path / "one")
    await _put(first, f"{_outputs.JOURNAL_KEY}/00000000.jsonl", b"")
    fresh = open_output(s3_bucket.url("run"), staging_dir=tmp_path / "two")
    assert not fresh.local_dir.exists()
    with pytest.raises(ConfigurationError, match=r"one process \(unsharded\)") as refused:
        await fresh.check_layout(Shard(0, 2))
    assert fresh.url in str(refused.value)


async def test_shards_results_merge_whole_lines_shard_after_shard(output: Output) -> None:
    await _put(output, ".novita-shards/0-of-3/results.jsonl", _line("a") + _line("b") + b'{"id"')
    await _put(output, ".novita-shards/2-of-3/results.jsonl", _line("c"))  # shard 1 never ran
    merged = await output.merge_shard_results(3)
    assert merged == output.local_dir / "results.jsonl"
    assert merged.read_bytes() == _line("a") + _line("b") + _line("c")
    assert (await output.sizes())["results.jsonl"] == len(merged.read_bytes())


async def test_a_merged_stores_results_are_uploaded(s3_bucket: S3Bucket) -> None:
    output = open_output(s3_bucket.url("run"))
    await _put(output, ".novita-shards/0-of-1/results.jsonl", _line("a"))
    await output.merge_shard_results(1)
    assert s3_bucket.get("run/results.jsonl") == _line("a")


async def test_another_process_gets_the_same_output(output: Output) -> None:
    copy = pickle.loads(pickle.dumps(output.for_process()))
    assert type(copy) is type(output)
    assert copy.actor_key() == output.actor_key()
    assert copy.local_dir == output.local_dir.absolute()
    await _put(output, "a_0.png", b"made here")
    assert await copy.sizes() == {"a_0.png": 9}  # the copy reaches the same files


def test_a_folders_key_is_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output = open_output("out")
    assert output.actor_key() == str(tmp_path / "out")
    assert output.for_process().url == str(tmp_path / "out")


def test_a_memory_store_stays_in_its_process(tmp_path: Path) -> None:
    output = open_output("memory://bucket/run", staging_dir=tmp_path)
    assert isinstance(output, ObjectOutput)
    assert output.actor_key() == "memory://bucket/run"
    with pytest.raises(ConfigurationError, match="a memory:// store lives in one process"):
        output.for_process()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda t: t / "file", "must be a folder (it names a file)"),
        (lambda t: t / "file" / "out", "file is a file, not a folder"),
    ],
)
def test_a_folder_this_machine_cannot_make_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], why: str
) -> None:
    (tmp_path / "file").write_text("kept\n")
    output = open_output(make(tmp_path))
    with pytest.raises(ValidationError, match=re.escape(why)) as refused:
        output.check_usable()
    assert refused.value.field == "out"
    assert (tmp_path / "file").read_text() == "kept\n"
    open_output(tmp_path / "new" / "out").check_usable()  # made by the run: fine


def test_a_stores_staging_is_never_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    open_output("memory://bucket/run", staging_dir=tmp_path / "file").check_usable()
