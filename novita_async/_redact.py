"""Redaction used by every log line, event, ``repr`` and exception message.

Signed image URLs carry their credentials in the query string, so a URL is shown without query,
fragment or user info. Secrets are shown by their last four characters at most.
"""

from __future__ import annotations

import yarl

__all__ = ["mask_secret", "redact_url", "scrub"]


def redact_url(url: str | yarl.URL) -> str:
    """``url`` without query string, fragment or credentials: safe to log."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        clean = parsed.with_query(None).with_fragment(None).with_user(None)
    except (TypeError, ValueError):
        # Not a URL we can parse: keep what precedes any query marker.
        text = str(url)
        return text.split("?", 1)[0].split("#", 1)[0]
    return str(clean)


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
