"""Shards without Ray: which shard a job belongs to, a shard's folder, and the layout refusals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from support import S3Bucket

from novita_async import (
    BatchOptions,
    BatchRunner,
    ClientConfig,
    ConfigurationError,
    InstantIDRequest,
    NovitaClient,
)
from novita_async.batch import Job, Shard, open_output, shard_of
from novita_async.batch._options import SHARDS_FOLDER
from novita_async.emulator import Emulator, EmulatorConfig

_IDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)


@given(job_id=_IDS, count=st.integers(min_value=1, max_value=64))
def test_each_job_has_exactly_one_shard(job_id: str, count: int) -> None:
    k = shard_of(job_id, count)
    assert 0 <= k < count
    assert [n for n in range(count) if Shard(n, count).owns(job_id)] == [k]


def test_the_shard_is_the_same_in_another_process() -> None:
    # Another interpreter, with another string-hash salt: Python's hash() would differ there.
    ids = ["job-1", "job-2", "a", "é", "0", "x" * 300, "\U0001f600 face", *map(str, range(200))]
    code = (
        "import json, sys; from novita_async.batch import shard_of; "
        "ids = json.load(sys.stdin); print(json.dumps([shard_of(i, 7) for i in ids]))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(child.stdout) == [shard_of(i, 7) for i in ids]
    # Pinned: a change of the hash would send the jobs of every sharded folder to other shards.
    assert [shard_of(i, 4) for i in ("job-1", "job-2", "a", "é", "0")] == [2, 1, 2, 3, 0]
    assert [shard_of(i, 7) for i in ("job-1", "job-2", "a", "é", "0")] == [6, 5, 4, 3, 3]


def test_shard_values_and_text() -> None:
    assert Shard.parse("1/4") == Shard(1, 4)
    assert Shard(1, 4).folder(Path("out")) == Path("out") / SHARDS_FOLDER / "1-of-4"
    assert BatchOptions(shard="0/2").shard == Shard(0, 2)
    for bad in ("2/2", "x/2", "1", "-1/2", "0/0"):
        with pytest.raises(ConfigurationError, match="shard must be INDEX/COUNT"):
            BatchOptions(shard=bad)
    for index, count in ((2, 2), (-1, 3), (0, 0), (True, 2)):
        with pytest.raises((TypeError, ValueError)):
            Shard(index, count)


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _jobs(count: int) -> list[Job]:
    return [
        Job(
            id=f"job{n}",
            face_images=[_png(n)],
            ref_images=[_png(n + 100)],
            request=InstantIDRequest(prompt=f"portrait {n}", width=128, height=128),
        )
        for n in range(count)
    ]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=3, task_base_seconds=0, image_mode="tiny")


async def test_shards_share_out_and_keep_their_journals(emu: Emulator, tmp_path: Path) -> None:
    jobs = _jobs(8)
    async with NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as c:
        for k in range(2):
            summary = await BatchRunner(c, tmp_path, BatchOptions(shard=Shard(k, 2))).run_all(jobs)
            assert summary.jobs == sum(shard_of(job.id, 2) == k for job in jobs)
    shards = tmp_path / SHARDS_FOLDER
    assert sorted(p.name for p in shards.iterdir() if p.is_dir()) == ["0-of-2", "1-of-2"]
    for k in range(2):
        assert (shards / f"{k}-of-2" / ".novita-journal.jsonl").is_file()
    assert not (tmp_path / ".novita-journal.jsonl").exists()
    merged = await open_output(tmp_path).merge_shard_results(2)
    lines = [json.loads(line) for line in merged.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(job.id for job in jobs)
    for line in lines:  # every image in OUT itself, named by its job
        assert line["status"] == "succeeded"
        assert [(tmp_path / name).is_file() for name in line["files"]] == [True]
    assert emu.stats().submissions == 8


async def test_an_output_folder_keeps_its_number_of_shards(emu: Emulator, tmp_path: Path) -> None:
    jobs = _jobs(2)
    sharded, unsharded = tmp_path / "sharded", tmp_path / "unsharded"
    async with NovitaClient(emu.api_key, base_url=emu.base_url, assets_url=emu.assets_url) as c:
        await BatchRunner(c, sharded, BatchOptions(shard=Shard(0, 2))).run_all(jobs)
        await BatchRunner(c, unsharded).run_all(jobs)
        with pytest.raises(ConfigurationError, match=r"in 2 shards; this run asks for 3 shards"):
            await BatchRunner(c, sharded, BatchOptions(shard=Shard(0, 3))).run_all(jobs)
        with pytest.raises(ConfigurationError, match=r"in 2 shards; this run is unsharded"):
            await BatchRunner(c, sharded).run_all(jobs)
        with pytest.raises(ConfigurationError, match=r"one process \(unsharded\); this run asks"):
            await BatchRunner(c, unsharded, BatchOptions(shard=Shard(1, 2))).run_all(jobs)
        # The other shard of the same count is welcome.
        await BatchRunner(c, sharded, BatchOptions(shard=Shard(1, 2))).run_all(jobs)
    # A refused run left no folder behind that would claim another layout.
    assert sorted(p.name for p in (sharded / SHARDS_FOLDER).iterdir() if p.is_dir()) == [
        "0-of-2",
        "1-of-2",
    ]
    assert not (unsharded / SHARDS_FOLDER).exists()


def _unreachable() -> ClientConfig:
    return ClientConfig.resolve("k" * 20, base_url="http://127.0.0.1:9")


async def test_run_sharded_refuses_another_count_before_starting_ray(tmp_path: Path) -> None:
    import ray

    from novita_async.ray import run_sharded

    Shard(0, 2).folder(tmp_path).mkdir(parents=True)
    with pytest.raises(ConfigurationError) as refused:
        await run_sharded([], tmp_path, shards=3, connection=_unreachable())
    assert "2 shards" in str(refused.value) and "3 shards" in str(refused.value)

    assert not ray.is_initialized()


async def test_a_bucket_keeps_its_number_of_shards(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    import ray

    from novita_async.ray import run_sharded

    # Shards of another run, written from another machine: this one's staging folder is empty.
    s3_bucket._client().put_object(
        Bucket=s3_bucket.name, Key="run/.novita-shards/1-of-2/.novita-journal/0000000000.jsonl"
    )
    url = s3_bucket.url("run")
    with pytest.raises(ConfigurationError) as refused:
        await run_sharded([], url, shards=3, connection=_unreachable())
    assert f"{url} holds a run in 2 shards; this run asks for 3 shards" in str(refused.value)
    assert not ray.is_initialized()
    async with NovitaClient("k" * 20, base_url="http://127.0.0.1:9") as client:
        with pytest.raises(ConfigurationError, match=r"in 2 shards; this run is unsharded"):
            await BatchRunner(client, url).run_all(_jobs(1))
    assert not (tmp_path / "staging").exists() or not list((tmp_path / "staging").rglob("*.jsonl"))
