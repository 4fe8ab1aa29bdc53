"""Outputs: where a run's images and files go, a local folder or an object store, as one concept.

:func:`open_output` reads ``--out``: a path (or ``file://`` URL) is a :class:`LocalOutput`;
``s3://BUCKET/PREFIX``, ``gs://``, ``az://`` (``abfs://``, ``azure://``) and ``memory://`` (this
process only) an :class:`ObjectOutput`, through obstore (the ``[s3]`` extra, imported only then);
any other ``scheme:/`` is refused before anything is sent. What differs between the two is a
method of :class:`Output`; nothing else asks which one it has.

A store is worked on through a local staging folder (lock, the journal's working copy, images
while they download, results, gallery) named by a hash of the store's endpoint, bucket and prefix.
Each image is uploaded whole as its task ends, then removed from staging. Credentials come from
the environment, never from the URL; a failure of the store is one
:class:`~novita_async.StorageError` naming the object, without credentials. A task's images
(:class:`ImageSaver`) are downloaded, measured (size, SHA-256: what a rerun and ``status
--verify`` check) and published before the job is recorded succeeded.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio.to_thread
import attrs

from .._client import NovitaClient
from .._config import redact_url, scrub
from .._exceptions import (
    ConfigurationError,
    InvalidResponseError,
    LocalIOError,
    StorageError,
    ValidationError,
)
from .._failures import RetryPolicy
from .._files import local_io, lock_or_refuse, looks_like_url, write_atomically
from .._http import ClientEvent, EventKind
from .._models import TaskResult
from ._events import BatchEventKind, SummaryCounter
from ._jobs import ImageSource, Job, JobInputError
from ._journal import JOURNAL_KEY, JOURNAL_NAME, RESULTS_NAME, JournalMirror, ResultLine
from ._options import SHARDS_FOLDER, Shard

if TYPE_CHECKING:
    from obstore.store import ObjectStore, RetryConfig


try:  # pragma: no cover - always present on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: merges are not serialised
    fcntl = None  # type: ignore[assignment]

# --- names: what a run writes in OUT ---------------------------------------------------------

GALLERY_NAME = "index.html"
LOCK_NAME = ".novita-lock"
_MERGE_LOCK = ".merge-lock"
_SHARD_NAME = re.compile(r"(\d+)-of-(\d+)")
# An image the runner names: <job id>_<n>.<ext>.
_IMAGE_NAME = re.compile(r".+_\d+\.(png|jpeg|jpg|webp)", re.IGNORECASE)
# The temporary name's additions: ".<name>.<pid>-<counter>.part", at their longest.
_TEMP_OVERHEAD = len(".") + len(".") + 7 + len("-") + 20 + len(".part")


def is_run_output(path: ImageSource | str | os.PathLike[str], out_dir: Path) -> bool:
    """Whether ``path`` is a file a run in ``out_dir`` writes (or may write)."""
    if isinstance(path, bytes) or not _named_like_output(os.path.basename(path)):
        return False  # (a link named otherwise pointing at an output is left alone)
    try:
        resolved = Path(path).resolve()
        out = out_dir.resolve()
    except OSError:
        return False
    return resolved.parent == out and _named_like_output(resolved.name)


def _named_like_output(name: str) -> bool:
    return (
        name in (RESULTS_NAME, GALLERY_NAME)
        or name.startswith(".novita")
        or name.endswith(".part")
        or _IMAGE_NAME.fullmatch(name) is not None
    )


def check_output_names(job: Job, name_max: int) -> None:
    """:class:`JobInputError` unless every name the run creates for ``job`` fits in ``name_max``
    bytes (the output file system's limit, counted in bytes of UTF-8, not characters)."""
    extension = max(job.request.image_type, "jpeg", key=len)
    longest = f"{job.id}_{job.request.images_out - 1}.{extension}"
    size = len(longest.encode("utf-8", "surrogatepass")) + _TEMP_OVERHEAD
    if size > name_max:
        raise JobInputError(
            "NAME_TOO_LONG",
            f"job id {job.id!r} makes file names of up to {size} bytes (temporary names "
            f"included); the output folder's file system allows {name_max}: use a shorter id",
        )


class OutputLock:
    """``flock`` on ``OUT/.novita-lock``: one run per output folder, whatever its journal path
    (the operating system releases it if the process dies)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        with local_io("locking the output folder", self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock_or_refuse(
                fd, f"{self.path.parent} is in use by another run; one run per output folder"
            )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# --- layout and merge of a sharded run's results ----------------------------------------------


def _check_folder_layout(out_dir: Path, shard: Shard | None) -> None:
    try:
        names = os.listdir(out_dir / SHARDS_FOLDER)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    counts = {int(m[2]) for name in names if (m := _SHARD_NAME.fullmatch(name))}
    _refuse_other_layout(str(out_dir), counts, (out_dir / JOURNAL_NAME).exists(), shard)


def _refuse_other_layout(
    where: str, counts: set[int], unsharded: bool, shard: Shard | None
) -> None:
    if shard is None and counts:
        earlier = _in_shards(counts)
        raise ConfigurationError(
            f"{where} holds a run in {earlier}; this run is unsharded: run it in "
            f"{earlier} as well (novita-async run --ray --shards {max(counts)}), or use "
            "another output folder"
        )
    if shard is not None and ((others := counts - {shard.count}) or unsharded):
        earlier = _in_shards(others) if others else "one process (unsharded)"
        raise ConfigurationError(
            f"{where} holds a run in {earlier}; this run asks for {_in_shards({shard.count})}: "
            "rerun with the folder's layout, or use another output folder"
        )


def _in_shards(counts: set[int]) -> str:
    return " and ".join(f"{n} shard{'s' if n != 1 else ''}" for n in sorted(counts))


def _merge_lock(folder: Path) -> int:
    """A descriptor holding (once it can) the lock that makes the merges of shards ending at once
    one after another: the last reads every shard's final file."""
    path = folder / SHARDS_FOLDER / _MERGE_LOCK
    with local_io("merging the shards' results", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _whole_lines(parts: Iterable[bytes | None]) -> Iterator[bytes]:
    for part in parts:
        for line in (part or b"").splitlines(keepends=True):
            try:
                ResultLine.decode(line)
            except ValueError:
                continue  # a torn last line: that shard's rerun rebuilds its file
            yield line


# --- the output: a local folder or an object store ----------------------------------------------


class Output(abc.ABC):
    """Where a run's outputs go (see :func:`open_output`): a folder, or an object store worked on
    through a local staging folder."""

    __slots__ = ()
    url: str
    """What messages and reports show: the folder's path, or the store's URL."""
    local_dir: Path
    """The folder the run works in: OUT itself, or the store's staging folder."""

    def check_usable(self) -> None:  # noqa: B027  (a store's staging folder is the package's)
        """:class:`ValidationError` (field ``out``) if this machine cannot make the folder."""

    @abc.abstractmethod
    def location(self, name: str) -> str:
        """Where OUT's file ``name`` is (``results.jsonl``...): a path or a key's URL."""

    async def publish(self, paths: Sequence[Path]) -> None:  # noqa: B027  (a folder: in place)
        """Put a task's images, saved in :attr:`local_dir`, where they belong."""

    async def publish_file(self, path: Path, key: str) -> str:
        """Put the file ``path`` of :attr:`local_dir` in OUT as ``key``; its :meth:`location`."""
        return self.location(key)  # a folder: where it belongs already

    @abc.abstractmethod
    async def get_bytes(self, key: str) -> bytes | None:
        """The content of OUT's file ``key``; None if there is no such file."""

    @abc.abstractmethod
    async def sizes(self) -> dict[str, int]:
        """The size of each file directly in OUT (not in sub-folders), by name."""

    def journal_mirror(self, journal: Path) -> JournalMirror | None:
        """The store's copy of the journal at ``journal`` (None: a folder keeps only its own)."""
        return None

    async def check_layout(self, shard: Shard | None) -> None:
        """:class:`ConfigurationError` unless a run as ``shard`` (None: unsharded) fits the runs
        OUT has held: the same number of shards, or unsharded, as before."""
        await anyio.to_thread.run_sync(_check_folder_layout, self.local_dir, shard)

    async def merge_shard_results(self, count: int) -> Path:
        """Write OUT's ``results.jsonl`` from its ``count`` shards' (a torn line left out): the
        lines one run over the same jobs writes, shard after shard; the local copy's path."""
        target = self.local_dir / RESULTS_NAME
        lock = await anyio.to_thread.run_sync(_merge_lock, self.local_dir)
        try:
            keys = [f"{SHARDS_FOLDER}/{Shard(k, count).name}/{RESULTS_NAME}" for k in range(count)]
            parts = [await self.get_bytes(key) for key in keys]  # None: a shard never started
            await anyio.to_thread.run_sync(write_atomically, target, _whole_lines(parts))
        finally:
            os.close(lock)
        await self.publish_file(target, RESULTS_NAME)
        return target

    def actor_key(self) -> str:
        """OUT as every process names it: the folder's absolute path, or the store's URL."""
        return self.url

    @abc.abstractmethod
    def for_process(self) -> Output:
        """This output as another process (a Ray shard) is given it, picklable;
        :class:`ConfigurationError` for one living in this process only (``memory://``)."""


class LocalOutput(Output):
    """A local output folder: every file is written in place; publishing does nothing."""

    __slots__ = ("local_dir", "url")

    def __init__(self, folder: Path) -> None:
        self.local_dir = folder
        self.url = str(folder)

    def __repr__(self) -> str:
        return f"LocalOutput({self.url!r})"

    def check_usable(self) -> None:
        # The nearest thing that exists on the way must be a folder, for the run to make the rest.
        above = next((p for p in self.local_dir.parents if p.exists()), None)
        if self.local_dir.exists() and not self.local_dir.is_dir():
            raise ValidationError("out", self.url, "must be a folder (it names a file)")
        if above is not None and not above.is_dir():
            raise ValidationError(
                "out", self.url, f"cannot be made: {above} is a file, not a folder"
            )

    def location(self, name: str) -> str:
        return str(self.local_dir / name)

    async def get_bytes(self, key: str) -> bytes | None:
        path = self.local_dir / key
        with local_io(f"reading {key}", path), contextlib.suppress(FileNotFoundError):
            return await anyio.Path(path).read_bytes()
        return None

    async def sizes(self) -> dict[str, int]:
        def walk() -> dict[str, int]:
            found = {}
            with os.scandir(self.local_dir) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):  # (a dangling link: no file)
                        if stat.S_ISREG((info := entry.stat()).st_mode):  # a link: its target
                            found[entry.name] = info.st_size
            return found

        try:
            return await anyio.to_thread.run_sync(walk)
        except (FileNotFoundError, NotADirectoryError):
            return {}  # every file missing
        except OSError as exc:
            raise LocalIOError.from_os_error(exc, "listing the output folder", self.url) from exc

    def actor_key(self) -> str:
        return str(self.local_dir.absolute())

    def for_process(self) -> LocalOutput:
        return LocalOutput(self.local_dir.absolute())  # another process's working folder differs


MULTIPART_CHUNK = 5 * 1024 * 1024
"""Objects larger than this go up in parts of this size (S3's smallest part)."""


class ObjectOutput(Output):
    """An output in an object store; keys are relative to the URL's prefix. Its ``repr`` and
    messages show :attr:`url` only: no credentials, no query."""

    __slots__ = ("_opened", "_prefix", "_store", "local_dir", "staging", "url")

    def __init__(
        self,
        url: str,
        staging: Path,
        store: ObjectStore,
        prefix: str = "",
        *,
        opened: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        self.url = url
        self.staging = self.local_dir = staging
        self._store = store
        self._prefix = prefix  # only for memory://, whose store has no prefix of its own
        self._opened = opened  # open_output's options, to open it again in another process

    def __repr__(self) -> str:
        return f"ObjectOutput({self.url!r}, staging={str(self.staging)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Opened again where it lands: the store client is that process's, and a staging root
        # not given is that machine's.
        return (functools.partial(open_output, **self._opened), (self.url,))

    def location(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _path(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def put_bytes(self, key: str, data: bytes, *, create: bool = False) -> None:
        """Store ``data`` as ``key``; ``create``: only if no such object exists yet (else
        ``StorageError`` with reason ``STORAGE_CONFLICT``)."""
        mode = "create" if create else "overwrite"
        with self._errors("writing", key) as obstore:
            await obstore.put_async(
                self._store, self._path(key), data, mode=mode, use_multipart=False
            )

    async def get_bytes(self, key: str) -> bytes | None:
        """The object's content; None if there is no such object."""
        with self._errors("reading", key) as obstore:
            try:
                return bytes(
                    await (await obstore.get_async(self._store, self._path(key))).bytes_async()
                )
            except FileNotFoundError:  # obstore's NotFoundError is one
                return None

    async def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (ending in ``/``), relative to the output's prefix."""
        strip = len(self._prefix) + 1 if self._prefix else 0
        keys: list[str] = []
        with self._errors("listing", prefix) as obstore:
            async for batch in obstore.list(self._store, prefix=self._path(prefix)):
                keys.extend(str(meta["path"])[strip:] for meta in batch)
        return keys

    async def sizes(self) -> dict[str, int]:
        strip = len(self._prefix) + 1 if self._prefix else 0
        with self._errors("listing", "") as obstore:  # one listing, however many images
            found = await obstore.list_with_delimiter_async(self._store, self._prefix or None)
        return {str(meta["path"])[strip:]: int(meta["size"]) for meta in found["objects"]}

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            with self._errors("deleting", keys[0]) as obstore:
                await obstore.delete_async(self._store, [self._path(key) for key in keys])

    async def publish(self, paths: Sequence[Path]) -> None:
        """Upload each image under its name, then remove it from staging."""
        for path in paths:
            await self.publish_file(path, path.name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    async def publish_file(self, path: Path, key: str) -> str:
        """Upload ``path`` as ``key`` (in parts when large); the local copy stays."""
        with self._errors("uploading", key) as obstore:
            await obstore.put_async(self._store, self._path(key), path, chunk_size=MULTIPART_CHUNK)
        return self.location(key)

    def journal_mirror(self, journal: Path) -> JournalMirror:
        """Kept as segments, so that a run restarted on another machine resumes; under the
        journal's place in staging (else :data:`JOURNAL_KEY`)."""
        try:
            key = journal.relative_to(self.staging).with_suffix("").as_posix()
        except ValueError:
            key = JOURNAL_KEY
        return JournalMirror(self, key, journal)

    async def check_layout(self, shard: Shard | None) -> None:
        """The store's keys first (staging may be new on this machine), then staging's."""
        keys = await self.list_keys(SHARDS_FOLDER + "/")
        counts = {int(m[2]) for key in keys if (m := _SHARD_NAME.fullmatch(key.split("/")[1]))}
        unsharded = bool(await self.list_keys(JOURNAL_KEY + "/"))
        _refuse_other_layout(self.url, counts, unsharded, shard)
        await super().check_layout(shard)

    def for_process(self) -> ObjectOutput:
        if self.url.startswith("memory:"):
            raise ConfigurationError(
                f"out {self.url!r}: a memory:// store lives in one process; shards need a "
                "folder or a store every node reaches (s3://, gs://, az://)"
            )
        return self

    @contextlib.contextmanager
    def _errors(self, doing: str, key: str) -> Iterator[Any]:
        """obstore, its failures as one :class:`StorageError` naming the object."""
        obstore = _obstore(self.url)
        try:
            yield obstore
        except StorageError:
            raise
        except Exception as exc:
            raise _storage_error(exc, f"{doing} {self.location(key)}", self.url) from None


_OBJECT_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "memory"})
_SUPPORTED = "s3://, gs://, az:// (abfs://, azure://), memory://, file:// or a local folder"


def open_output(
    out: str | os.PathLike[str] | Output,
    *,
    staging_dir: str | os.PathLike[str] | None = None,
    retry_timeout: float | None = None,
) -> Output:
    """The output ``out`` names (an :class:`Output` is taken as it is); :class:`ConfigurationError`
    for a URL the package cannot write, naming its scheme and what is supported.

    ``staging_dir`` is the root of staging folders (default: ``$NOVITA_ASYNC_STAGING``, else
    ``~/.cache/novita-async/staging``). ``retry_timeout`` bounds, in seconds, how long the store
    client retries a failing request before it fails (obstore's default: 180).
    """
    if isinstance(out, Output):
        return out
    if not isinstance(out, str) or (scheme := looks_like_url(out)) is None:
        return LocalOutput(Path(out))
    shown = redact_url(out)
    if not out[len(scheme) + 1 :].startswith("//"):
        raise ConfigurationError(
            f"out {shown!r} looks like a {scheme!r} URL without '//': write "
            f"{scheme}://BUCKET/PREFIX for an object store, or ./{out} for a local folder"
        )
    parts = urlsplit(out)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"out {shown!r}: a file:// URL names a local path only")
        return LocalOutput(Path(parts.path))
    if scheme not in _OBJECT_SCHEMES:
        raise ConfigurationError(
            f"out {shown!r}: the scheme {scheme!r} is not one this package can write; "
            f"supported: {_SUPPORTED}"
        )
    if parts.password is not None or parts.query or parts.fragment:
        raise ConfigurationError(
            f"out {shown!r}: credentials and query strings do not go in the URL; the store "
            "reads them from the environment (AWS_*, GOOGLE_*, AZURE_* variables)"
        )
    if not parts.netloc and scheme != "memory":
        raise ConfigurationError(f"out {shown!r} names no bucket: write {scheme}://BUCKET/PREFIX")
    url = f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")
    staging = _staging_folder(scheme, url, staging_dir)
    stores = _obstore(url).store
    opened = {"staging_dir": staging_dir, "retry_timeout": retry_timeout}
    retry: RetryConfig | None = None
    if retry_timeout is not None:
        retry = {
            "retry_timeout": timedelta(seconds=retry_timeout),
            "max_retries": 3,
            "backoff": {"init_backoff": timedelta(seconds=min(0.1, retry_timeout))},
        }
    try:
        if scheme == "memory":
            prefix = f"{parts.netloc}{parts.path}".strip("/")
            return ObjectOutput(url, staging, stores.MemoryStore(), prefix, opened=opened)
        store = stores.from_url(url, retry_config=retry)
    except Exception as exc:
        raise ConfigurationError(
            f"out {url!r}: the object store refused its configuration: {_detail(exc)}"
        ) from None
    return ObjectOutput(url, staging, store, opened=opened)


# The variables through which obstore points a URL at one endpoint or another (a URL names a
# bucket, not where it lives): part of the staging folder's key.
_ENDPOINT_VARIABLES = {
    **dict.fromkeys(("s3", "s3a"), ("AWS_ENDPOINT_URL", "AWS_ENDPOINT")),
    **dict.fromkeys(
        ("az", "abfs", "abfss", "azure"),
        (
            "AZURE_STORAGE_ACCOUNT_NAME",
            "AZURE_ENDPOINT",
            "AZURE_STORAGE_ENDPOINT",
            "AZURE_USE_EMULATOR",
        ),
    ),
}


def _staging_folder(scheme: str, url: str, staging_dir: str | os.PathLike[str] | None) -> Path:
    """``<root>/<key>`` (see the module's note): the key hashes endpoint, bucket and prefix."""
    endpoint = [
        f"{name}={os.environ.get(name, '')}" for name in _ENDPOINT_VARIABLES.get(scheme, ())
    ]
    key = hashlib.sha256("\n".join([url, *endpoint]).encode()).hexdigest()[:16]
    if staging_dir is None and not (staging_dir := os.environ.get("NOVITA_ASYNC_STAGING")):
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        staging_dir = Path(cache) / "novita-async" / "staging"
    return Path(staging_dir) / key


def _obstore(shown: str) -> Any:
    """obstore, imported here only: optional (the ``[s3]`` extra), for a store's output."""
    try:
        import obstore.exceptions
        import obstore.store
    except ImportError:
        raise ConfigurationError(
            f"out {shown!r} is in an object store, which needs obstore: "
            "pip install 'novita-async[s3]'"
        ) from None
    return obstore


# Environment variables whose values must never reach a message, whatever the store says.
_SECRET_VARIABLES = (
    *("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_SERVICE_ACCOUNT_KEY", "NOVITA_API_KEY"),
    *("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_KEY"),
    *("AZURE_STORAGE_TOKEN", "AZURE_CLIENT_SECRET"),
)
# The paths of AWS's instance-metadata service (at 169.254.169.254 or $AWS_METADATA_ENDPOINT).
_INSTANCE_METADATA_PATHS = ("/latest/api/token", "/latest/meta-data/")
_QUERY_IN_TEXT = re.compile(r"(\w+://[^\s?\"']+)\?[^\s\"']*")


def _detail(exc: BaseException) -> str:
    """The first line of a store error (its debug dump follows), without queries or secrets."""
    text = str(exc).split("\n", 1)[0].strip() or type(exc).__name__
    text = _QUERY_IN_TEXT.sub(r"\1", text)
    return scrub(text, *(os.environ.get(name, "") for name in _SECRET_VARIABLES))


def _storage_error(exc: BaseException, doing: str, url: str) -> StorageError:
    errors = _obstore(url).exceptions
    detail = _detail(exc)
    if any(path in detail for path in _INSTANCE_METADATA_PATHS):
        # With no AWS_ACCESS_KEY_ID in the environment, obstore's last place for credentials is
        # the instance-metadata service; off EC2 its failure (a 403, a timeout) hides the cause.
        said = (detail.rsplit(" - ", 1)[-1] if " - " in detail else detail).rstrip(": ")
        return StorageError(
            f"{doing} failed: no credentials for the store were found: set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY (or run where an instance role provides them); the "
            f"instance-metadata service, asked last, gave none ({said})",
            reason="STORAGE_PERMISSION",
            url=url,
        )
    if "NoSuchBucket" in detail or (
        "list request" in detail and "404 Not Found" in detail and not isinstance(exc, OSError)
    ):
        # A listing answered 404 names no key: the bucket itself is not there (S3 says
        # NoSuchBucket in the XML body obstore shows only in part).
        bucket = urlsplit(url).netloc
        return StorageError(
            f"{doing} failed: the bucket {bucket!r} does not exist at this endpoint (or these "
            "credentials cannot see it): create it, or check the URL and AWS_ENDPOINT_URL",
            reason="STORAGE_NOT_FOUND",
            url=url,
        )
    if isinstance(exc, FileNotFoundError):
        reason = "STORAGE_NOT_FOUND"
    elif isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
        reason = "STORAGE_PERMISSION"
    elif isinstance(exc, errors.AlreadyExistsError | errors.PreconditionError):
        reason = "STORAGE_CONFLICT"
    elif any(word in detail.lower() for word in ("sending request", "connect", "timed out")):
        reason = "STORAGE_CONNECTION"
    else:
        reason = "STORAGE_ERROR"
    return StorageError(f"{doing} failed: {detail}", reason=reason, url=url)


# --- saving a task's images ---------------------------------------------------------------------


@attrs.frozen
class SavedImages:
    """A task's images as saved: their names in OUT, sizes in bytes and SHA-256 (hex)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    digests: tuple[str, ...]


def _patient(retry: RetryPolicy) -> RetryPolicy:
    # At least 4 attempts: an unattended run rides out a 429 or 5xx spell longer than an
    # interactive caller would (the task is paid for; its image must not be lost).
    return attrs.evolve(retry, attempts=max(retry.attempts, 4))


@attrs.define(kw_only=True)
class ImageSaver:
    _client: NovitaClient
    _out_dir: Path
    _retry: RetryPolicy = attrs.field(converter=_patient)
    _counter: SummaryCounter
    _on_request: Callable[[str], None]
    _emit: Callable[..., None]
    _publish: Callable[[Sequence[Path]], Awaitable[None]] | None

    async def save(self, job_id: str, task_id: str, result: TaskResult) -> SavedImages:
        """The task's images, every one of them in OUT."""
        self._counter.tasks += 1
        if not result.images:
            raise InvalidResponseError(f"task {task_id} succeeded without images")

        def observe(event: ClientEvent) -> None:
            if event.kind is EventKind.RETRY:
                message = f"image download retried in {event.delay or 0.0:.1f}s"
                if event.error == "IMAGE_URL_EXPIRED":
                    message = "image URL expired: fetching fresh ones"
                    self._on_request("result")  # the renewal's call
                    self._on_request("image")  # and the image's again
                fields: dict[str, Any] = {"task_id": task_id, "reason": event.error}
                self._emit(BatchEventKind.RETRIED, job_id, message=message, **fields)

        for _ in result.images:
            self._on_request("image")
        # Each image's size and SHA-256 come from the download itself, hashed as it streamed.
        saved = await self._client._download_images(
            result, self._out_dir, stem=f"{job_id}_", retry=self._retry, on_event=observe
        )
        if self._publish is not None:
            await self._publish([image.path for image in saved])
        self._counter.images += len(saved)
        return SavedImages(
            names=tuple(image.path.name for image in saved),
            sizes=tuple(image.size for image in saved),
            digests=tuple(image.sha256 for image in saved),
        )
