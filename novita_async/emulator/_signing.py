"""Presigned image URLs in the S3 query-string style: HMAC over path, date and lifetime."""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

__all__ = ["URLSigner", "Verdict"]

_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


class Verdict(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


class URLSigner:
    """Signs and checks image URLs; the secret is fresh for every emulator run."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._secret = secrets.token_bytes(32)
        self._clock = clock

    def _signature(self, path: str, date: str, expires: str) -> str:
        message = f"{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, ttl: int) -> str:
        """The query string that makes ``path`` readable for ``ttl`` seconds from now."""
        moment = datetime.fromtimestamp(math.floor(self._clock()), UTC)
        date = moment.strftime(_DATE_FORMAT)
        expires = str(int(ttl))
        return urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Credential": f"EMULATOR/{moment:%Y%m%d}/local/s3/aws4_request",
                "X-Amz-Date": date,
                "X-Amz-Expires": expires,
                "X-Amz-SignedHeaders": "host",
                "x-id": "GetObject",
                "X-Amz-Signature": self._signature(path, date, expires),
            }
        )

    def check(self, path: str, query: Mapping[str, str]) -> tuple[Verdict, datetime | None]:
        """The verdict on a request, and when the URL expires (if it parsed)."""
        date = query.get("X-Amz-Date", "")
        expires = query.get("X-Amz-Expires", "")
        given = query.get("X-Amz-Signature", "")
        if not (date and expires.isdigit() and given):
            return Verdict.BAD_SIGNATURE, None
        if not hmac.compare_digest(given, self._signature(path, date, expires)):
            return Verdict.BAD_SIGNATURE, None
        try:
            signed_at = datetime.strptime(date, _DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return Verdict.BAD_SIGNATURE, None
        expiry = signed_at.timestamp() + int(expires)
        verdict = Verdict.EXPIRED if self._clock() >= expiry else Verdict.VALID
        return verdict, datetime.fromtimestamp(expiry, UTC)
