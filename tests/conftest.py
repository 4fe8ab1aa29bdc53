"""Shared test configuration: anyio on asyncio (aiohttp is asyncio-only), shared fixtures.

``emu`` is the emulator on loopback every in-process test uses. Its configuration is the
``emulator_config`` fixture (a test folder's or module's conftest overrides it), plus the fields a
test names with ``@pytest.mark.emulator(task_base_seconds=3600, ...)``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from novita_async.emulator import Emulator, EmulatorConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator(**fields): EmulatorConfig fields of this test's `emu`"
    )
    config.addinivalue_line("markers", "small_fs_size(bytes): the size of this test's `small_fs`")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, task_base_seconds=0)


@pytest.fixture
async def emu(
    request: pytest.FixtureRequest, emulator_config: EmulatorConfig
) -> AsyncIterator[Emulator]:
    marker = request.node.get_closest_marker("emulator")
    config = emulator_config if marker is None else attrs.evolve(emulator_config, **marker.kwargs)
    async with Emulator(config) as emulator:
        yield emulator


@pytest.fixture
def exited_pid() -> int:
    """The pid of a process that has exited (so no process has it, barring reuse): what a run
    killed mid-download leaves in its temporary file names."""
    code = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return int(child.stdout)


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
        _mount("-o", "remount,ro", str(self.path))


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SmallFileSystem]:
    """A real file system that runs out of space (skipped where tmpfs cannot be mounted)."""
    path = tmp_path / "small"
    path.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    # A test may ask for another size: @pytest.mark.small_fs_size(8 * 1024 * 1024).
    marker = request.node.get_closest_marker("small_fs_size")
    size = marker.args[0] if marker is not None else SmallFileSystem.SIZE
    mounted = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallFileSystem(path)
    finally:
        # Fails (EBUSY) if a test left a file open on it: that is a leak worth seeing.
        subprocess.run(["umount", str(path)], check=True)


# --- object storage (moto's S3 server on loopback) --------------------------------------------

S3_SECRET = "moto-secret-key-that-must-never-show-0x5EC"
"""The secret access key the tests' S3 credentials carry: no output may hold it."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a thread on loopback, for the whole session; its endpoint URL."""
    pytest.importorskip("obstore")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


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


@pytest.fixture
def s3_bucket(
    s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> S3Bucket:
    """A new bucket, this process's environment pointing obstore at it, and a staging root of
    this test's own (``$NOVITA_ASYNC_STAGING``), never the user's cache."""
    name = "novita-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    bucket = create_bucket(s3_server, name)
    for variable, value in bucket.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("NOVITA_ASYNC_STAGING", str(tmp_path / "staging"))
    return bucket
