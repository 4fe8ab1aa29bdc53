"""Upload each distinct input content once: per run, and across runs through the journal.

Assets are keyed by the SHA-256 of their bytes. The first job to need a content uploads it; jobs
that need the same content meanwhile wait for that one upload instead of starting their own
(:mod:`novita_async._singleflight`). A failed upload is not remembered: the jobs waiting on it fail
with its error, and a later job tries again. Uploads run under their own limit
(``upload_concurrency``); each reads its file whole (in a worker thread), checks it still has the
hash it was named by, and sends the bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import anyio

from .._client import NovitaClient
from .._singleflight import SingleFlight
from ._inputs import PreparedImage, read_file
from ._job import JobInputError
from ._journal import Journal

__all__ = ["AssetUploader"]


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
        self._limit = anyio.CapacityLimiter(concurrency)
        # Nothing is remembered here: the journal remembers every asset uploaded.
        self._uploads: SingleFlight[str, str] = SingleFlight()
        self._on_request = on_request
        self.uploaded = 0
        """Uploads this run actually sent (not those answered from the journal or shared)."""

    async def asset_id(self, image: PreparedImage) -> str:
        if (known := self._journal.assets.get(image.sha256)) is not None:
            return known
        return await self._uploads.get(image.sha256, lambda: self._upload(image))

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
        self._journal.record_asset(image.sha256, asset_id)
        return asset_id
