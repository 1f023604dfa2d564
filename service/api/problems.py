"""RFC 9457 problem+json bodies: every error the API returns is built here."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Reply:
    """A whole response, framework-free: the ingest fast path sends it as it is,
    Quart routes turn it into a `Response`. `code` is the problem code (if any),
    for the access log and the request metrics."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    code: str = ""

    def response(self) -> Response:
        response = Response(self.body, status=self.status, content_type=self.content_type)
        for name, value in self.headers.items():
            response.headers[name] = value
        response.problem_code = self.code  # type: ignore[attr-defined]
        return response


def problem_reply(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Reply:
    body, content_type = problem_body(status, code, detail, **extra)
    return Reply(status, body, content_type, dict(headers or {}), code)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    return problem_reply(status, code, detail, headers=headers, **extra).response()


def unauthenticated(detail: str) -> Reply:
    return problem_reply(401, "unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def unavailable(detail: str, retry_after: int) -> Reply:
    """503: the database is unreachable or too slow; a retry is always safe."""
    return problem_reply(503, "unavailable", detail, headers={"Retry-After": str(retry_after)})


def overloaded(detail: str, retry_after: int, *, close: bool = False) -> Reply:
    """429: shedding load; `close` when the request's body is left unread."""
    headers = {"Retry-After": str(retry_after)}
    if close:
        headers["Connection"] = "close"
    return problem_reply(429, "overloaded", detail, headers=headers)
