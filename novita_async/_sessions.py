"""Which aiohttp session a request goes on: the caller's, or one the client opened itself.

Sessions are created on first use. A caller's session (``NovitaClient(session=...)``) carries every
request, unless it adds credentials of its own (``auth`` or an ``Authorization`` header) and the
request must carry none (an asset or image URL): that one goes on a bare session of ours, so that
no credential ever reaches another host. The client closes only the sessions it opened.
"""

from __future__ import annotations

import aiohttp
import anyio

from ._config import ClientConfig

__all__ = ["Sessions"]


class Sessions:
    """The sessions of one client: the caller's (never closed here) and those opened here."""

    def __init__(self, config: ClientConfig, user: aiohttp.ClientSession | None) -> None:
        self._config = config
        self._user = user
        self.own: aiohttp.ClientSession | None = None
        """The session opened here when the caller gave none (None until first used)."""
        self._bare: aiohttp.ClientSession | None = None
        self.closed = False

    # There is no await between each check and its assignment, so concurrent first calls cannot
    # create two sessions (asyncio switches tasks only at awaits).
    def for_request(self, credentials: bool) -> aiohttp.ClientSession:
        """The session for a request that carries our key (``credentials``) or must carry none."""
        user = self._user
        if user is not None and (credentials or not _adds_credentials(user)):
            return user
        if self.closed:
            raise RuntimeError("this NovitaClient is closed")
        if user is None:
            if self.own is None:
                self.own = self._new()
            return self.own
        # The caller's session would add its own credentials to an asset or image request.
        if self._bare is None:
            self._bare = self._new()
        return self._bare

    async def aclose(self) -> None:
        """Close the sessions opened here (never the caller's)."""
        self.closed = True
        opened = [s for s in (self.own, self._bare) if s is not None]
        self.own = self._bare = None
        # Shielded: closing must complete even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            for session in opened:
                await session.close()

    def _new(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._config.max_connections),
            # No cookies and no default headers: credentials are added per request, per origin.
            cookie_jar=aiohttp.DummyCookieJar(),
        )


def _adds_credentials(session: aiohttp.ClientSession) -> bool:
    return session.auth is not None or "Authorization" in session.headers
