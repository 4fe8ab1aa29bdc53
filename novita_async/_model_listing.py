"""The model listing (``GET /v3/model``): its filters checked and turned into query parameters,
and its pages followed from cursor to cursor (:meth:`NovitaClient.list_models`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import yarl

from . import _spec
from ._converter import structure
from ._exceptions import InvalidResponseError, ValidationError
from ._models import Model, ModelPage
from ._transport import Transport

__all__ = ["MODELS_PATH", "model_pages", "model_query"]

MODELS_PATH = "/v3/model"


def model_query(
    types: str | Sequence[str] | None,
    is_sdxl: bool | None,
    query: str | None,
    visibility: str | None,
    source: str | None,
    is_inpainting: bool | None,
    page_size: int,
) -> dict[str, str]:
    """The query parameters of a listing's first page; :class:`ValidationError` for a bad filter."""
    kinds = [types] if isinstance(types, str) else list(types or ())
    kinds = [k.strip() for kind in kinds for k in kind.split(",") if k.strip()]
    for kind in kinds:
        if kind not in _spec.MODEL_TYPES:
            allowed = ", ".join(_spec.MODEL_TYPES)
            raise ValidationError("types", kind, f"must be one of {allowed}")
    if visibility is not None and visibility not in ("public", "private"):
        raise ValidationError("visibility", visibility, "must be public or private")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 100:
        raise ValidationError("page_size", page_size, "must be an integer in [1, 100]")
    params = {"pagination.limit": str(page_size)}
    if kinds:
        params["filter.types"] = ",".join(kinds)
    for name, value in (("query", query), ("visibility", visibility),
                        ("source", source), ("is_sdxl", is_sdxl),
                        ("is_inpainting", is_inpainting)):  # fmt: skip
        if value is not None:
            params[f"filter.{name}"] = str(value).lower() if isinstance(value, bool) else value
    return params


async def model_pages(
    transport: Transport, url: yarl.URL, params: dict[str, str]
) -> AsyncIterator[Model]:
    """Every model of the listing at ``url``, page after page; a repeated cursor (a listing that
    would never end) is an :class:`InvalidResponseError`."""
    seen: set[str] = set()
    while True:
        answer = await transport.call_json("GET", "models", url, auth=True, params=params)
        page: ModelPage = structure(answer, ModelPage)
        for model in page.models:
            yield model
        cursor = page.next_cursor
        if not cursor:
            return
        if cursor in seen:
            raise InvalidResponseError(f"the model listing repeated cursor {cursor!r}")
        seen.add(cursor)
        params["pagination.cursor"] = cursor
