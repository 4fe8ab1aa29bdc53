"""Client configuration: the API key, the three hosts, timeouts and pool size, from the
constructor's arguments, else the environment (``NOVITA_API_KEY``, ``NOVITA_BASE_URL``,
``NOVITA_ASSETS_URL``), else the defaults; and how each is shown (redacted) in every log line,
event, ``repr`` and message: a URL without query, fragment or user info (signed image URLs carry
their credentials in the query string), a secret by its last four characters at most.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import aiohttp
import attrs
import yarl
from attrs.validators import ge, gt, optional

from ._exceptions import ConfigurationError
from ._failures import RetryPolicy
from ._models import INTEGER, NUMBER, Validator, setting

ENV_API_KEY = "NOVITA_API_KEY"
ENV_BASE_URL = "NOVITA_BASE_URL"
ENV_ASSETS_URL = "NOVITA_ASSETS_URL"
DEFAULT_BASE_URL = "https://api.novita.ai"
DEFAULT_ASSETS_URL = "https://assets.novitai.com/image"


def redact_url(url: str | yarl.URL) -> str:
    """``url`` without query string, fragment or credentials: safe to log."""
    # Plain string work: this runs for every request, and parsing a URL costs far more.
    text = str(url).split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = text.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = authority.rsplit("@", 1)[1]
        text = f"{scheme}://{authority}{slash}{path}"
    return text


def mask_secret(secret: str) -> str:
    """A recognisable, useless form of ``secret`` (``'***abcd'``); short ones are all stars."""
    return "***" + secret[-4:] if len(secret) >= 16 else "***"


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by its masked form."""
    for secret in filter(None, secrets):
        text = text.replace(secret, mask_secret(secret))
    return text


_positive_or_none: Validator = optional(setting("a positive number or None", *NUMBER, gt(0)))


@attrs.frozen
class Timeouts:
    """Per-request timeouts in seconds; ``None`` disables one.

    ``connect`` bounds opening a socket (not waiting for a free pooled connection, so thousands of
    coroutines can queue on a small pool). ``sock_read`` bounds the silence between two reads.
    ``total`` bounds a whole API call (upload, submit, result, models), never an image download.

    ``download_total`` bounds one attempt at an image download, which ``sock_read`` cannot: a body
    trickling in a byte every few seconds is never silent for long. 300 s is far more than an
    image needs on any working link (6 MB at 20 KB/s), yet frees a job on a crawling connection
    within minutes. Past it: :class:`~novita_async.APITimeoutError`, retried per the policy.
    """

    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    sock_read: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    total: float | None = attrs.field(default=None, validator=_positive_or_none)
    download_total: float | None = attrs.field(default=300.0, validator=_positive_or_none)

    def for_api(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, sock_connect=self.connect, sock_read=self.sock_read
        )

    def for_download(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.download_total, sock_connect=self.connect, sock_read=self.sock_read
        )


def _http_url(name: str, value: str) -> yarl.URL:
    try:
        url = yarl.URL(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name} is not a URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(f"{name} must be an http(s) URL with a host, got {url.scheme!r}")
    if url.query_string or url.user or url.password:
        raise ConfigurationError(f"{name} must not carry a query string or credentials")
    return url


@attrs.frozen
class ClientConfig:
    """Everything a :class:`NovitaClient` needs, resolved once at construction."""

    api_key: str = attrs.field(repr=lambda key: repr(mask_secret(key)))
    base_url: yarl.URL = attrs.field(default=yarl.URL(DEFAULT_BASE_URL))
    assets_url: yarl.URL = attrs.field(default=yarl.URL(DEFAULT_ASSETS_URL))
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = attrs.field(
        default=100, validator=setting("an integer >= 1", *INTEGER, ge(1))
    )
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    send_auth_to_assets: bool = False

    @classmethod
    def resolve(
        cls,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        assets_url: str | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        send_auth_to_assets: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """Fill what the caller left out from the environment, then from the defaults."""
        env = os.environ if environ is None else environ
        key = (api_key if api_key is not None else env.get(ENV_API_KEY, "")).strip()
        if not key:
            raise ConfigurationError(
                f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
            )
        if any(ch.isspace() for ch in key):
            raise ConfigurationError("the API key must not contain whitespace")
        base = base_url or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        assets = assets_url or env.get(ENV_ASSETS_URL) or DEFAULT_ASSETS_URL
        return cls(
            api_key=key,
            base_url=_http_url("base_url", base.rstrip("/")),
            assets_url=_http_url("assets_url", assets),
            timeouts=timeouts or Timeouts(),
            max_connections=max_connections,
            retry=retry or RetryPolicy(),
            send_auth_to_assets=send_auth_to_assets,
        )

    def api_url(self, path: str) -> yarl.URL:
        """``path`` (``/v3/...``) under the API base URL, keeping any path prefix it has."""
        return self.base_url.with_path(self.base_url.path.rstrip("/") + path)
