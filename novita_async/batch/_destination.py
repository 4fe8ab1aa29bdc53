"""(Shim, removed in Phase B: see :mod:`._outputs`.)"""

from __future__ import annotations

import os
from typing import Any, cast

from .._files import looks_like_url
from ._outputs import (
    MULTIPART_CHUNK,
    LocalOutput,
    ObjectOutput,
    Output,
    open_output,
    staging_key,
    staging_root,
)

__all__ = [
    "MULTIPART_CHUNK",
    "Destination",
    "LocalOutput",
    "ObjectOutput",
    "looks_like_url",
    "parse_out",
    "staging_key",
    "staging_root",
]

Destination = LocalOutput | ObjectOutput


def parse_out(out: str | os.PathLike[str] | Output, **options: Any) -> Destination:
    return cast(Destination, open_output(out, **options))
