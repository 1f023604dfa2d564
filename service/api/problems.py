"""RFC 9457 problem+json bodies: every error the API returns is built here."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response

PROBLEM_JSON = "application/problem+json"

TITLES = {
    "malformed_json": "Malformed JSON",
    "schema": "Event does not match the record schema",
    "json_rule": "JSON breaks an I-JSON rule",
    "hash_mismatch": "Recomputed hash differs",
    "broken_link": "prev_hash does not link to the previous event",
    "seq_not_contiguous": "Sequence numbers are not contiguous",
    "mixed_sessions": "Batch holds events of more than one session",
    "reserved_kind": "Kind is reserved for the server",
    "bad_request": "Bad request",
    "bad_parameter": "Query parameter out of range or malformed",
    "bad_framing": "Ambiguous message framing",
    "malformed_request": "Malformed HTTP request",
    "uri_too_long": "Request target too long",
    "headers_too_large": "Request headers too large",
    "not_implemented": "Not implemented",
    "http_version_not_supported": "HTTP version not supported",
    "method_not_allowed": "Method not allowed",
    "request_timeout": "Request body not received in time",
    "unauthenticated": "Missing, unknown or revoked API key",
    "forbidden": "API key lacks the required scope",
    "not_found": "Not found",
    "seq_gap": "Batch starts past the stored chain head",
    "chain_fork": "Batch conflicts with the stored chain",
    "too_large": "Request too large",
    "unsupported_media_type": "Unsupported media type",
    "overloaded": "Service overloaded",
    "unavailable": "Database unavailable",
    "internal": "Internal server error",
}


def title(code: str) -> str:
    """The title of a code; a code without one (a bug: tests check every code of
    hashcore has one) still gets a readable answer, not a 500."""
    return TITLES.get(code) or code.replace("_", " ").capitalize()


def problem_type(code: str) -> str:
    return f"tag:agent-chain,2026:problem:{code}"


def problem_body(status: int, code: str, detail: str, **extra: Any) -> tuple[bytes, str]:
    """The bytes of a problem and their media type (for layers below Quart, too)."""
    body = {
        "type": problem_type(code),
        "title": title(code),
        "status": status,
        "detail": detail,
        "code": code,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return orjson.dumps(body), PROBLEM_JSON


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body, content_type = problem_body(status, code, detail, **extra)
    response = Response(body, status=status, content_type=content_type)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    # Read by the access log and the request metrics.
    response.problem_code = code  # type: ignore[attr-defined]
    return response


def unauthenticated(detail: str) -> Response:
    return problem(401, "unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def unavailable(detail: str, retry_after: int) -> Response:
    """503: the database is unreachable or too slow; a retry is always safe."""
    return problem(503, "unavailable", detail, headers={"Retry-After": str(retry_after)})
