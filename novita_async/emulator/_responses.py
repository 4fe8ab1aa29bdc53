"""The bodies the service and its neighbours answer with: JSON errors, S3 XML, gateway HTML."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = ["APIProblem", "api_error", "gateway_html", "s3_error"]


class APIProblem(Exception):
    """Raised by a route to answer with the documented JSON error body."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        with_metadata: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.headers = dict(headers or {})
        self.with_metadata = with_metadata

    def response(self) -> web.Response:
        return api_error(
            self.status,
            self.reason,
            self.message,
            self.metadata if self.with_metadata else None,
            self.headers,
            with_metadata=self.with_metadata,
        )


def api_error(
    status: int,
    reason: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    with_metadata: bool = True,
) -> web.Response:
    """``{"code", "reason", "message", "metadata"}``, as every documented error looks
    (``with_metadata=False``: without ``metadata``, as an undocumented answer may be)."""
    body: dict[str, Any] = {"code": status, "reason": reason, "message": message}
    if with_metadata:
        body["metadata"] = dict(metadata or {})
    return web.json_response(body, status=status, headers=headers)


def s3_error(status: int, code: str, message: str, **fields: str) -> web.Response:
    """An S3-style XML error document (what a presigned object URL answers)."""
    extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    request_id = secrets.token_hex(8).upper()
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{extra}"
        f"<RequestId>{request_id}</RequestId><HostId>emulator</HostId></Error>"
    )
    return web.Response(status=status, text=text, content_type="application/xml")


_GATEWAY_TITLES = {
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def gateway_html(status: int) -> web.Response:
    """The HTML page a gateway in front of the API answers with (not JSON)."""
    title = _GATEWAY_TITLES.get(status, f"{status} Error")
    text = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=text, content_type="text/html")


def amz_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
