"""Error mapping from answers, without a server: every status, JSON or not."""

from __future__ import annotations

import json

import pytest

from novita_async import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from novita_async._http import error_from_answer

KEY = "sk_secret_0123456789abcdef"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, APIStatusError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (504, ServerError),
    ],
)
def test_status_maps_to_its_error_with_the_body_fields(status: int, cls: type) -> None:
    body = json.dumps({"code": status, "reason": "SOME_REASON", "message": "it went wrong",
                       "metadata": {"field": "prompt"}}).encode()  # fmt: skip
    error = error_from_answer(status, body, method="GET", url="http://h/p", secret=KEY)
    assert type(error) is cls
    assert (error.status, error.code, error.reason) == (status, status, "SOME_REASON")
    assert error.api_message == "it went wrong"
    assert error.metadata == {"field": "prompt"}
    assert "SOME_REASON" in str(error) and "it went wrong" in str(error)


@pytest.mark.parametrize(
    "body",
    [b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"", b"\xff\xfe\x00garbage", b"[1, 2]",
     b'{"code": "not-a-number", "reason": 5}'],
)  # fmt: skip
def test_odd_bodies_never_crash(body: bytes) -> None:
    error = error_from_answer(502, body, method="GET", url="http://h/p", secret=KEY)
    assert isinstance(error, ServerError)
    assert error.status == 502
    assert error.reason  # the body's, or HTTP_502


def test_a_long_html_body_is_truncated() -> None:
    body = b"<html>" + b"x" * 100_000 + b"</html>"
    error = error_from_answer(502, body, method="GET", url="http://h/p", secret=KEY)
    assert len(error.body) <= 2000
    assert len(str(error)) < 1000


def test_an_echoed_key_is_scrubbed_from_errors() -> None:
    body = json.dumps({"reason": "INVALID_API_KEY", "message": f"key {KEY} is wrong",
                       "metadata": {"key": KEY}}).encode()  # fmt: skip
    error = error_from_answer(403, body, method="GET", url="http://h/p", secret=KEY)
    assert KEY not in str(error)
    assert KEY not in error.body
    assert KEY not in repr(error.metadata)
