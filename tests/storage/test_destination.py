"""open_output: which outputs the package writes, and the refusals that come before anything is
sent; ObjectOutput's operations against moto's S3 server, errors mapped to StorageError."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from support import S3_SECRET, S3Bucket

from novita_async import ConfigurationError, StorageError
from novita_async.batch import open_output
from novita_async.batch._outputs import LocalOutput, ObjectOutput


@pytest.mark.parametrize(
    ("out", "scheme"),
    [
        ("ftp://host/folder", "ftp"),
        ("http://example.com/out", "http"),
        ("hdfs://cluster/out", "hdfs"),
        ("S3X://bucket/out", "s3x"),
    ],
)
def test_an_unknown_scheme_is_refused_naming_it(out: str, scheme: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        open_output(out)
    message = str(refused.value)
    assert f"the scheme {scheme!r} is not one this package can write" in message
    assert "s3://" in message  # and what is supported


@pytest.mark.parametrize("out", ["s3:/bucket/out", "gs:/bucket", "ftp:/x/y"])
def test_a_url_missing_its_slashes_is_refused(out: str) -> None:
    with pytest.raises(ConfigurationError, match="URL without '//'"):
        open_output(out)


def test_credentials_or_a_query_in_the_url_are_refused_without_showing_them() -> None:
    for out in ("s3://user:hunter2-secret@bucket/p", "s3://bucket/p?sig=hunter2-secret"):
        with pytest.raises(ConfigurationError) as refused:
            open_output(out)
        assert "hunter2" not in str(refused.value)
        assert "from the environment" in str(refused.value)


def test_a_bucketless_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names no bucket"):
        open_output("s3:///prefix")


def test_paths_and_file_urls_are_local(tmp_path: Path) -> None:
    assert isinstance(open_output(str(tmp_path)), LocalOutput)
    assert open_output(tmp_path).local_dir == tmp_path
    assert open_output(f"file://{tmp_path}").local_dir == tmp_path
    assert open_output("a:b/c").local_dir == Path("a:b/c")  # a colon, but no scheme:/


def test_staging_is_per_url_under_the_given_root(tmp_path: Path) -> None:
    one = open_output("memory://bucket/a", staging_dir=tmp_path)
    same = open_output("memory://bucket/a/", staging_dir=tmp_path)
    other = open_output("memory://bucket/b", staging_dir=tmp_path)
    assert isinstance(one, ObjectOutput)
    assert one.staging.parent == tmp_path
    assert one.staging == same.staging != other.staging


def test_the_core_imports_without_obstore_and_says_how_to_get_it() -> None:
    code = (
        "import sys; sys.modules['obstore'] = None\n"
        "import novita_async, novita_async.batch\n"
        "from novita_async.batch import open_output\n"
        "try:\n    open_output('s3://bucket/p')\n"
        "except novita_async.ConfigurationError as e:\n    print(e)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'novita-async[s3]'" in shown.stdout


async def test_objects_round_trip_and_errors_are_storage_errors(s3_bucket: S3Bucket) -> None:
    out = open_output(s3_bucket.url("p"))
    assert isinstance(out, ObjectOutput)
    assert S3_SECRET not in repr(out)
    await out.put_bytes("dir/a.txt", b"alpha")
    assert await out.get_bytes("dir/a.txt") == b"alpha"
    assert await out.get_bytes("dir/missing") is None
    assert await out.list_keys("dir/") == ["dir/a.txt"]
    assert s3_bucket.keys() == ["p/dir/a.txt"]
    with pytest.raises(StorageError) as conflict:
        await out.put_bytes("dir/a.txt", b"beta", create=True)
    assert conflict.value.reason == "STORAGE_CONFLICT"
    assert f"{s3_bucket.url('p')}/dir/a.txt" in str(conflict.value)
    await out.delete(["dir/a.txt"])
    assert s3_bucket.keys() == []
    # A bucket that does not exist: the store's refusal, as one StorageError, secret-free.
    absent = open_output(f"s3://{s3_bucket.name}-absent/p", retry_timeout=1.0)
    assert isinstance(absent, ObjectOutput)
    with pytest.raises(StorageError) as failed:
        await absent.put_bytes("x", b"x")
    assert S3_SECRET not in str(failed.value) and S3_SECRET not in repr(failed.value)
    copy = pickle.loads(pickle.dumps(failed.value))
    assert (type(copy), copy.reason, str(copy)) == (
        StorageError,
        failed.value.reason,
        str(failed.value),
    )


def test_staging_is_per_endpoint_as_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    one = open_output("s3://bucket/p", staging_dir=tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    other = open_output("s3://bucket/p", staging_dir=tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    again = open_output("s3://bucket/p", staging_dir=tmp_path)
    assert isinstance(one, ObjectOutput) and isinstance(other, ObjectOutput)
    assert one.staging != other.staging  # the same URL, another endpoint's bucket
    assert one.staging == again.staging
