"""JSON responses that can embed stored canonical bytes unchanged."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response


def json_response(body: dict[str, Any], *, raw: dict[str, bytes] | None = None) -> Response:
    """`body` as JSON; each `raw` value is already-serialized JSON, spliced in as is
    (a seal goes out byte for byte as it was signed and stored)."""
    if raw:
        body = {**body, **{k: orjson.Fragment(v) for k, v in raw.items()}}
    return Response(orjson.dumps(body), content_type="application/json")
