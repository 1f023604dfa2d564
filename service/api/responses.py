"""JSON responses that can embed stored canonical bytes unchanged."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response


def json_bytes(body: dict[str, Any], *, raw: dict[str, bytes] | None = None) -> bytes:
    """`body` as JSON; each `raw` value is already-serialized JSON, spliced in as is
    (a seal goes out byte for byte as it was signed and stored)."""
    if raw:
        body = {**body, **{k: orjson.Fragment(v) for k, v in raw.items()}}
    return orjson.dumps(body)


def json_response(body: dict[str, Any], *, raw: dict[str, bytes] | None = None) -> Response:
    return Response(json_bytes(body, raw=raw), content_type="application/json")
