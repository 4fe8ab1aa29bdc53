"""Upload each distinct input content once: per run, and across runs through the journal.

Assets are keyed by the asset endpoint (the client's asset URL, origin and path) and the SHA-256
of their bytes: an id one endpoint issued is never sent to a run that uploads elsewhere. The
first job to need a content uploads it; jobs that need the same content meanwhile wait for that
one upload instead of starting their own (:mod:`novita_async._singleflight`). A failed upload is
not remembered: the jobs waiting on it fail with its error, and a later job tries again. Uploads
run under their own limit (``upload_concurrency``); each reads its file whole (in a worker
thread), checks it still has the hash it was named by, and sends the bytes.

An id taken from the cache (the journal) may be one the service has since forgotten: it documents
no asset lifetime. :meth:`AssetUploader.asset_id` says which ids came from the cache, so that a
refused submission can drop them (:meth:`AssetUploader.forget`) and upload the files again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable

import anyio
import yarl

from .._client import NovitaClient
from .._singleflight import SingleFlight
from ._inputs import PreparedImage, read_file
from ._job import JobInputError
from ._journal import AssetKey, Journal

__all__ = ["AssetUploader", "asset_endpoint"]


def asset_endpoint(assets_url: yarl.URL | str) -> str:
    """The endpoint an asset id belongs to: the asset URL's origin and path, without any user,
    password, query or fragment (nothing secret goes into the journal)."""
    url = yarl.URL(assets_url)
    return str(url.origin().with_path(url.path))


class AssetUploader:
    def __init__(
        self,
        client: NovitaClient,
        journal: Journal,
        *,
        concurrency: int,
        on_request: Callable[[str], None],
    ) -> None:
        self._client = client
        self._journal = journal
        self.endpoint = asset_endpoint(client.config.assets_url)
        self._limit = anyio.CapacityLimiter(concurrency)
        # Nothing is remembered here: the journal remembers every asset uploaded.
        self._uploads: SingleFlight[AssetKey, str] = SingleFlight()
        self._on_request = on_request
        self.uploaded = 0
        """Uploads this run actually sent (not those answered from the journal or shared)."""

    def _key(self, image: PreparedImage) -> AssetKey:
        return (self.endpoint, image.sha256)

    async def asset_id(self, image: PreparedImage) -> tuple[str, bool]:
        """``image``'s asset id, and whether it came from the cache (not uploaded just now, by
        this call or one it waited for)."""
        key = self._key(image)
        if (known := self._journal.assets.get(key)) is not None:
            return known, True
        return await self._uploads.get(key, lambda: self._upload(image)), False

    def replaced(self, cached: Iterable[tuple[PreparedImage, str]]) -> bool:
        """Whether the cache has dropped or replaced any of these ``(image, asset id)`` pairs."""
        assets = self._journal.assets
        return any(assets.get(self._key(image)) != asset_id for image, asset_id in cached)

    def forget(self, image: PreparedImage, asset_id: str) -> None:
        """``asset_id`` of ``image`` may be unknown to the service: upload it again when next
        asked (unless it was uploaded again meanwhile)."""
        self._journal.forget_asset(self._key(image), asset_id)

    async def _bytes(self, image: PreparedImage) -> bytes:
        if isinstance(image.source, bytes):
            return image.source
        path = os.fspath(image.source)
        try:
            data = await anyio.to_thread.run_sync(read_file, path)
        except OSError as exc:
            raise JobInputError(
                "INPUT_UNREADABLE", f"input file {path!r} cannot be read: {exc.strerror or exc}"
            ) from None
        # The bytes sent must be the bytes the journal will name by their hash.
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise JobInputError("INPUT_CHANGED", f"input file {path!r} changed while in use")
        return data

    async def _upload(self, image: PreparedImage) -> str:
        async with self._limit:
            data = await self._bytes(image)
            self._on_request("upload")
            asset_id = await self._client.upload_asset(data, content_type=image.content_type)
        self.uploaded += 1
        self._journal.record_asset(self._key(image), asset_id)
        return asset_id
