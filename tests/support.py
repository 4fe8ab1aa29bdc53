"""Helpers the tests share beyond fixtures, imported by name (``from support import ...``).

They live here, not in ``conftest.py``: several folders have a ``conftest.py`` of their own, and
``from conftest import`` would find whichever was imported last.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "S3_SECRET",
    "S3Bucket",
    "SmallFileSystem",
    "create_bucket",
    "mount",
    "reap",
    "reaped",
    "s3_env",
]


def reap(process: subprocess.Popen[Any]) -> None:
    """Kill ``process`` if it still runs, wait for it and close its pipes: a test never leaves a
    child behind, whichever way it ends (a child left running fails a later test with a
    ``ResourceWarning``)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def reaped(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``with reaped(subprocess.Popen(...)) as process:``, :func:`reap` on leaving, every path."""
    try:
        yield process
    finally:
        reap(process)


class SmallFileSystem:
    """A tmpfs of ``SIZE`` bytes mounted at ``path``, to fill up or remount read-only."""

    SIZE = 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Take every free byte (new files can still be created, not written to)."""
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def read_only(self) -> None:
        # Permission bits do not stop root, who runs these tests in CI; a read-only mount does.
        mount("-o", "remount,ro", str(self.path))


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


# --- object storage (moto's S3 server on loopback) --------------------------------------------

S3_SECRET = "moto-secret-key-that-must-never-show-0x5EC"
"""The secret access key the tests' S3 credentials carry: no output may hold it."""


def s3_env(endpoint: str) -> dict[str, str]:
    """The variables obstore reads to reach ``endpoint`` (as a user would set them)."""
    return {
        "AWS_ACCESS_KEY_ID": "novita-test-key-id",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


@attrs.frozen
class S3Bucket:
    """A fresh bucket of ``s3_server``, looked at with boto3 (the tests' own S3 client)."""

    endpoint: str
    name: str
    env: dict[str, str]

    def url(self, prefix: str = "run") -> str:
        return f"s3://{self.name}/{prefix}"

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_SECRET,
        )

    def keys(self, prefix: str = "") -> list[str]:
        client = self._client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def get(self, key: str) -> bytes:
        body: bytes = self._client().get_object(Bucket=self.name, Key=key)["Body"].read()
        return body

    def etag(self, key: str) -> str:
        etag: str = self._client().head_object(Bucket=self.name, Key=key)["ETag"]
        return etag.strip('"')


def create_bucket(endpoint: str, name: str) -> S3Bucket:
    bucket = S3Bucket(endpoint, name, s3_env(endpoint))
    bucket._client().create_bucket(Bucket=name)
    return bucket
