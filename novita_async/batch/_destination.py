"""Where a run's outputs go: a local folder, or an object store named by a URL.

:func:`parse_out` reads ``--out`` / ``BatchRunner(out)``: a path (or ``file://`` URL) is a
:class:`LocalOutput`; ``s3://BUCKET/PREFIX``, ``gs://BUCKET/PREFIX``, ``az://`` (``abfs://``,
``azure://``) and ``memory://`` (a store in this process only, for tests) are an
:class:`ObjectOutput`, written through obstore (the ``[s3]`` extra, imported only when such a URL
is given). Any other ``scheme:/`` is refused before anything is sent: a URL the package cannot
write must not become a local folder named ``s3:``.

An object-store run works in a local **staging** folder (its lock, the journal's working copy,
images while they download, ``results.jsonl`` and ``index.html`` before they are uploaded):
``<root>/<key>``, the key being the first 16 hex digits of the SHA-256 of the store's endpoint
(``AWS_ENDPOINT_URL`` and the like, as obstore reads them), bucket and prefix, so that the same
URL naming another endpoint's bucket gets another staging folder; the root being
``BatchOptions.staging_dir``, else
``$NOVITA_ASYNC_STAGING``, else ``~/.cache/novita-async/staging``. Each image is uploaded under
``PREFIX/<job id>_<n>.<ext>`` as its task ends, then removed from staging; an object is whole or
absent (a large one goes up in parts that appear together), so no temporary names show in the
bucket.

Credentials come from the environment the way obstore reads them (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``GOOGLE_*``, ``AZURE_*``), never
from the URL: a URL carrying a password or a query string is refused. Every failure of the store,
after obstore's own retries, is one :class:`~novita_async.StorageError` whose message names the
object and holds no credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._exceptions import ConfigurationError, StorageError
from .._redact import redact_url, scrub

if TYPE_CHECKING:
    from obstore.store import ObjectStore, RetryConfig

__all__ = [
    "MULTIPART_CHUNK",
    "Destination",
    "LocalOutput",
    "ObjectOutput",
    "looks_like_url",
    "parse_out",
    "staging_key",
    "staging_root",
]

MULTIPART_CHUNK = 5 * 1024 * 1024
"""Objects larger than this go up in parts of this size (S3's smallest part)."""
STAGING_VARIABLE = "NOVITA_ASYNC_STAGING"

_OBJECT_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "memory"})
_SUPPORTED = "s3://, gs://, az:// (abfs://, azure://), memory://, file:// or a local folder"
_URL_LIKE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")
# Environment variables whose values must never reach a message, whatever the store says.
_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "NOVITA_API_KEY",
)
# The paths of AWS's instance-metadata service (at 169.254.169.254 or $AWS_METADATA_ENDPOINT).
_INSTANCE_METADATA_PATHS = ("/latest/api/token", "/latest/meta-data/")
_QUERY_IN_TEXT = re.compile(r"(\w+://[^\s?\"']+)\?[^\s\"']*")


def looks_like_url(text: str) -> str | None:
    """The scheme of ``text`` if it reads as ``scheme:/...`` (a URL, or a mistyped one)."""
    match = _URL_LIKE.match(text)
    return match.group(1).lower() if match else None


class LocalOutput:
    """A local output folder: every file is written in place; publishing does nothing."""

    __slots__ = ("folder",)

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"LocalOutput({str(self.folder)!r})"

    @property
    def local_dir(self) -> Path:
        return self.folder

    @property
    def url(self) -> str:
        return str(self.folder)

    async def publish(self, paths: Sequence[Path]) -> None:
        """The images are where they belong already."""

    async def publish_file(self, path: Path, key: str) -> None:
        """The file is where it belongs already."""


class ObjectOutput:
    """An output in an object store (see the module's docstring); keys are relative to the URL's
    prefix. Its ``repr`` and messages show :attr:`url` only: no credentials, no query."""

    __slots__ = ("_prefix", "_store", "staging", "url")

    def __init__(self, url: str, staging: Path, store: ObjectStore, prefix: str = "") -> None:
        self.url = url
        """The URL as shown: scheme, bucket and prefix."""
        self.staging = staging
        """The local folder the run works in."""
        self._store = store
        self._prefix = prefix  # only for memory://, whose store has no prefix of its own

    def __repr__(self) -> str:
        return f"ObjectOutput({self.url!r}, staging={str(self.staging)!r})"

    @property
    def local_dir(self) -> Path:
        return self.staging

    def key_url(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    async def put_file(self, path: Path, key: str) -> None:
        """Upload the local file ``path`` as ``key`` (in parts when large)."""
        import obstore  # present: parse_out made this output

        with self._errors("uploading", key):
            await obstore.put_async(self._store, self._path(key), path, chunk_size=MULTIPART_CHUNK)

    async def put_bytes(self, key: str, data: bytes, *, create: bool = False) -> None:
        """Store ``data`` as ``key``; ``create``: only if no such object exists yet (else
        ``StorageError`` with reason ``STORAGE_CONFLICT``)."""
        import obstore  # present: parse_out made this output

        with self._errors("writing", key):
            await obstore.put_async(
                self._store,
                self._path(key),
                data,
                mode="create" if create else "overwrite",
                use_multipart=False,
            )

    async def get_bytes(self, key: str) -> bytes | None:
        """The object's content; None if there is no such object."""
        import obstore  # present: parse_out made this output

        with self._errors("reading", key):
            try:
                answer = await obstore.get_async(self._store, self._path(key))
                return bytes(await answer.bytes_async())
            except FileNotFoundError:  # obstore's NotFoundError is one
                return None

    async def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a folder-like prefix ending in ``/``), relative to the
        output's prefix."""
        import obstore  # present: parse_out made this output

        strip = len(self._prefix) + 1 if self._prefix else 0
        with self._errors("listing", prefix):
            keys: list[str] = []
            async for batch in obstore.list(self._store, prefix=self._path(prefix)):
                keys.extend(str(meta["path"])[strip:] for meta in batch)
        return keys

    async def list_sizes(self) -> dict[str, int]:
        """The size of each object directly under the output's prefix (not in sub-folders),
        by key: one listing, however many images a run made."""
        import obstore  # present: parse_out made this output

        strip = len(self._prefix) + 1 if self._prefix else 0
        with self._errors("listing", ""):
            found = await obstore.list_with_delimiter_async(self._store, self._prefix or None)
        return {str(meta["path"])[strip:]: int(meta["size"]) for meta in found["objects"]}

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        import obstore  # present: parse_out made this output

        with self._errors("deleting", keys[0]):
            await obstore.delete_async(self._store, [self._path(key) for key in keys])

    async def publish(self, paths: Sequence[Path]) -> None:
        """Upload each image under its name, then remove it from staging."""
        for path in paths:
            await self.put_file(path, path.name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    async def publish_file(self, path: Path, key: str) -> None:
        """Upload ``path`` as ``key``, keeping the local copy (the next run's working file)."""
        await self.put_file(path, key)

    @contextlib.contextmanager
    def _errors(self, doing: str, key: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            raise _storage_error(exc, f"{doing} {self.key_url(key)}", self.url) from None


Destination = LocalOutput | ObjectOutput


def parse_out(
    out: str | os.PathLike[str] | Destination,
    *,
    staging_dir: str | os.PathLike[str] | None = None,
    retry_timeout: float | None = None,
) -> Destination:
    """The destination ``out`` names (see the module's docstring); :class:`ConfigurationError`
    for a URL the package cannot write, naming its scheme and what is supported.

    ``staging_dir`` is the root of staging folders (default: ``$NOVITA_ASYNC_STAGING``, else
    ``~/.cache/novita-async/staging``). ``retry_timeout`` bounds, in seconds, how long the store
    client retries a failing request before it fails (obstore's default: 180).
    """
    if isinstance(out, LocalOutput | ObjectOutput):
        return out
    if not isinstance(out, str):
        return LocalOutput(Path(out))
    scheme = looks_like_url(out)
    if scheme is None:
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
    staging = staging_root(staging_dir) / staging_key(scheme, url)
    _require_obstore(url)
    import obstore.store

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
            return ObjectOutput(url, staging, obstore.store.MemoryStore(), prefix)
        store = obstore.store.from_url(url, retry_config=retry)
    except Exception as exc:
        raise ConfigurationError(
            f"out {url!r}: the object store refused its configuration: {_detail(exc)}"
        ) from None
    return ObjectOutput(url, staging, store)


# The variables through which obstore points a URL at one endpoint or another (a URL names a
# bucket, not where it lives): part of the staging folder's key.
_ENDPOINT_VARIABLES = {
    "s3": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "az": (
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_ENDPOINT",
        "AZURE_STORAGE_ENDPOINT",
        "AZURE_USE_EMULATOR",
    ),
}
_ENDPOINT_VARIABLES["s3a"] = _ENDPOINT_VARIABLES["s3"]
for _alias in ("abfs", "abfss", "azure"):
    _ENDPOINT_VARIABLES[_alias] = _ENDPOINT_VARIABLES["az"]


def staging_key(scheme: str, url: str) -> str:
    """The name of the staging folder of ``url``: endpoint, bucket and prefix, hashed."""
    endpoint = [
        f"{name}={os.environ.get(name, '')}" for name in _ENDPOINT_VARIABLES.get(scheme, ())
    ]
    keyed = "\n".join([url, *endpoint])
    return hashlib.sha256(keyed.encode()).hexdigest()[:16]


def staging_root(staging_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder under which each object-store output gets its staging folder."""
    if staging_dir is not None:
        return Path(staging_dir)
    if root := os.environ.get(STAGING_VARIABLE):
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "novita-async" / "staging"


def _require_obstore(shown: str) -> None:
    try:
        import obstore  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"out {shown!r} is in an object store, which needs obstore: "
            "pip install 'novita-async[s3]'"
        ) from None


def _detail(exc: BaseException) -> str:
    """The first line of a store error (its debug dump follows), without queries or secrets."""
    text = str(exc).split("\n", 1)[0].strip() or type(exc).__name__
    text = _QUERY_IN_TEXT.sub(r"\1", text)
    return scrub(text, *(os.environ.get(name, "") for name in _SECRET_VARIABLES))


def _storage_error(exc: BaseException, doing: str, url: str) -> StorageError:
    from obstore import exceptions as errors

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
