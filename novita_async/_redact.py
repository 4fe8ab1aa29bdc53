"""Redaction used by every log line, event, ``repr`` and exception message.

Signed image URLs carry their credentials in the query string, so a URL is shown without query,
fragment or user info. Secrets are shown by their last four characters at most.
"""

from __future__ import annotations

import yarl

__all__ = ["mask_secret", "redact_url", "scrub"]


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
    if len(secret) < 16:
        return "***"
    return "***" + secret[-4:]


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by its masked form."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask_secret(secret))
    return text
