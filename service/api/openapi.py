"""GET /openapi.json: every endpoint, every parameter with the bounds the service
enforces, every status each operation can answer, and every error body, described
once and exactly (tests/test_openapi_conformance.py holds the service to it)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from ..config import Settings
from .problems import TITLES
from .responses import json_response
from .sessions import MAX_LIST, MAX_SEQ

MAX_CURSOR = 256
"""The longest listing cursor the service reads."""
MAX_BATCH_EVENTS = Settings.max_batch_events
"""`CHAIN_MAX_BATCH_EVENTS` unless configured."""
MAX_BODY_BYTES = Settings.max_body_bytes
"""`CHAIN_MAX_BODY_BYTES` unless configured."""

_HEX64 = "^[0-9a-f]{64}$"
_SESSION_ID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_KIND_CHARS = "[A-Za-z0-9_.:/-]{1,128}"
# YYYY-MM-DD with the days of each month, 29 February in leap years only (Gregorian,
# years 0000-9999); HH 00-23, MM 00-59, SS 00-60 (a leap second); 1-9 fraction digits; Z.
_DATE = (
    "(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[048]|[2468][048]|[13579][26])00)-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\\.[0-9]{1,9})?Z"
TS_PATTERN = f"^{_DATE}T{_TIME}$"

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _int(low: int, high: int = MAX_SEQ, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, **extra}


def _object(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object with exactly these members (those in `required` always there)."""
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
        **extra,
    }


_SCHEMAS: dict[str, Any] = {
    "SessionId": {
        "type": "string",
        "description": "A UUID in lowercase hex, hyphenated 8-4-4-4-12 (PROTOCOL §1).",
        "minLength": 36,
        "maxLength": 36,
        "pattern": _SESSION_ID,
    },
    "Hash": {
        "type": "string",
        "description": "64 lowercase hex characters: a SHA-256 digest.",
        "minLength": 64,
        "maxLength": 64,
        "pattern": _HEX64,
    },
    "Seq": _int(0, description="An integer in 0..2^53-1 (PROTOCOL §1)."),
    "Timestamp": {
        "type": "string",
        "description": "A UTC time in RFC 3339 form YYYY-MM-DDTHH:MM:SS[.f]Z, a real date, "
        "1 to 9 fraction digits, the zone always Z (PROTOCOL §1).",
        "minLength": 20,
        "maxLength": 30,
        "pattern": TS_PATTERN,
    },
    "Payload": {
        "type": "object",
        "description": "Any JSON object obeying the I-JSON rules of PROTOCOL §2: unique "
        "member names, no lone surrogates, numbers that are doubles (an integer above "
        "2^53-1 only as JCS writes it), at most 64 levels of nesting counted from the "
        "request body.",
    },
    "Event": _object(
        ["session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"],
        {
            "session_id": _ref("SessionId"),
            "seq": _ref("Seq"),
            "kind": {
                "type": "string",
                "description": "1 to 128 characters of A-Z a-z 0-9 _ . : / -; "
                "kinds beginning with CHAIN_ belong to the server (reserved_kind).",
                "minLength": 1,
                "maxLength": 128,
                "pattern": f"^(?!CHAIN_){_KIND_CHARS}$",
            },
            "ts": _ref("Timestamp"),
            "payload": _ref("Payload"),
            "prev_hash": _ref("Hash"),
            "hash": _ref("Hash"),
        },
        description="An event (PROTOCOL §1): exactly these seven members. Beyond this "
        "schema, `hash` is the SHA-256 of the JCS of the other six, and a batch's events "
        "share one session, have consecutive `seq` and each `prev_hash` is the previous "
        "event's `hash` (64 zeros before seq 0).",
    ),
    "Seal": _object(
        ["session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash", "signature"],
        {
            "session_id": _ref("SessionId"),
            "seq": _ref("Seq"),
            "kind": {"const": "CHAIN_SEAL"},
            "ts": _ref("Timestamp"),
            "payload": _object(
                ["first_seq", "prev_seal", "key_id"],
                {
                    "first_seq": _ref("Seq"),
                    "prev_seal": _ref("Hash"),
                    "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                },
            ),
            "prev_hash": _ref("Hash"),
            "hash": _ref("Hash"),
            "signature": {
                "type": "string",
                "description": "Ed25519 signature of the 32 bytes of `hash`.",
                "pattern": "^[0-9a-f]{128}$",
            },
        },
        description="A seal (PROTOCOL §4), written by the server after every batch.",
    ),
    "Record": {
        "description": "A stored record: an event or a seal.",
        "oneOf": [_ref("Event"), _ref("Seal")],
    },
    "Cursor": {
        "type": "string",
        "description": "An opaque token (base64url) that the session listing returned.",
        "maxLength": MAX_CURSOR,
        "pattern": "^[A-Za-z0-9_-]*$",
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `code` is the machine-readable part.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "pattern": "^tag:agent-chain,2026:problem:[a-z_]+$"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": sorted(TITLES)},
            "index": {
                "type": "integer",
                "minimum": 0,
                "description": "index of the offending event in the batch",
            },
            "member": {"type": "string", "description": "the offending member of that event"},
            "expected": {"type": "string"},
            "got": {"type": "string"},
            "parameter": {
                "type": "string",
                "description": "bad_parameter only: the query parameter refused",
            },
            "next_seq": {
                "type": "integer",
                "minimum": 0,
                "description": "409 only: where the chain continues",
            },
            "head_hash": {**_ref("Hash"), "description": "409 only: the stored head's hash"},
        },
        "additionalProperties": False,
    },
    "IngestResult": _object(
        ["session_id", "accepted", "duplicates", "duplicate", "head", "seal"],
        {
            "session_id": _ref("SessionId"),
            "accepted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "duplicate": {"type": "boolean"},
            "head": _object(["seq", "hash"], {"seq": _ref("Seq"), "hash": _ref("Hash")}),
            "seal": _ref("Seal"),
        },
    ),
    "SessionSummary": _object(
        ["session_id", "events", "seals", "first_event_ts", "last_event_ts", "created_at"],
        {
            "session_id": _ref("SessionId"),
            "events": {"type": "integer", "minimum": 0},
            "seals": {"type": "integer", "minimum": 0},
            "first_event_ts": {"oneOf": [_ref("Timestamp"), {"type": "null"}]},
            "last_event_ts": {"oneOf": [_ref("Timestamp"), {"type": "null"}]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    ),
    "SessionPage": _object(
        ["sessions", "next_cursor"],
        {
            "sessions": {
                "type": "array",
                "maxItems": MAX_LIST,
                "items": _ref("SessionSummary"),
            },
            "next_cursor": {
                "oneOf": [_ref("Cursor"), {"type": "null"}],
                "description": "the cursor of the next page; null on the last one",
            },
        },
    ),
    "SessionHead": _object(
        [
            "session_id",
            "events",
            "seals",
            "first_event_ts",
            "last_event_ts",
            "created_at",
            "next_seq",
            "head_hash",
            "updated_at",
            "last_seal",
        ],
        {
            "session_id": _ref("SessionId"),
            "events": {"type": "integer", "minimum": 0},
            "seals": {"type": "integer", "minimum": 0},
            "first_event_ts": {"oneOf": [_ref("Timestamp"), {"type": "null"}]},
            "last_event_ts": {"oneOf": [_ref("Timestamp"), {"type": "null"}]},
            "created_at": {"type": "string", "format": "date-time"},
            "next_seq": {"type": "integer", "minimum": 0},
            "head_hash": _ref("Hash"),
            "updated_at": {"type": "string", "format": "date-time"},
            "last_seal": {"oneOf": [_ref("Seal"), {"type": "null"}]},
        },
    ),
    "VerifyReport": _object(
        ["session_id", "ok", "records", "events", "seals", "keys_used", "problem"],
        {
            "session_id": _ref("SessionId"),
            "ok": {"type": "boolean"},
            "records": {"type": "integer", "minimum": 0},
            "events": {"type": "integer", "minimum": 0},
            "seals": {"type": "integer", "minimum": 0},
            "keys_used": {"type": "array", "items": {"type": "string"}},
            "problem": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        ["line", "seq", "kind", "reason", "detail", "expected", "found"],
                        {
                            "line": {"type": "integer"},
                            "seq": {"type": ["integer", "null"]},
                            "kind": {"type": ["string", "null"]},
                            "reason": {"type": "string"},
                            "detail": {"type": "string"},
                            "expected": {"type": ["string", "null"]},
                            "found": {"type": ["string", "null"]},
                        },
                    ),
                ]
            },
        },
    ),
    "SealKeys": _object(
        ["keys"],
        {
            "keys": {
                "type": "array",
                "items": _object(
                    ["key_id", "alg", "public_key", "active"],
                    {
                        "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                        "alg": {"const": "Ed25519"},
                        "public_key": {"type": "string", "pattern": _HEX64},
                        "active": {"type": "boolean"},
                    },
                ),
            }
        },
    ),
}


# ---- responses ----------------------------------------------------------------------

_REQUEST_ID = {
    "description": "The request's id: the client's X-Request-Id if printable and at most "
    "64 characters, else a new one; also in every log line of the request.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying; retrying is always safe.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _problem(
    status: int, codes: list[str], description: str, **headers: dict[str, Any]
) -> dict[str, Any]:
    """A problem+json response of this status, with one of these codes."""
    unknown = [c for c in codes if c not in TITLES]
    assert not unknown, unknown
    return {
        "description": description,
        "headers": {**headers, "X-Request-Id": _REQUEST_ID},
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        _ref("Problem"),
                        {"properties": {"status": {"const": status}, "code": {"enum": codes}}},
                    ]
                }
            }
        },
    }


def _layer(status: int, codes: list[str], description: str) -> dict[str, Any]:
    """A problem the HTTP layer answers before any route (no X-Request-Id); it closes
    the connection."""
    response = _problem(status, codes, description)
    del response["headers"]
    return response


# Any request, before it reaches a route: what h11 cannot parse, ambiguous framing.
_LAYER_400 = ["malformed_request", "bad_framing"]

_RESPONSES: dict[str, Any] = {
    "BadRequest": _problem(
        400,
        [*_LAYER_400, "bad_request"],
        "malformed_request: the request line or headers are not valid HTTP/1.1; "
        "bad_framing: both Transfer-Encoding and Content-Length (the connection closes)",
    ),
    "BadParameter": _problem(
        400,
        ["bad_parameter", *_LAYER_400, "bad_request"],
        "bad_parameter: a query parameter is malformed or out of range (`parameter` names "
        "it); or as BadRequest",
    ),
    "BadBatch": _problem(
        400,
        [
            "malformed_json",
            "json_rule",
            "schema",
            "hash_mismatch",
            "broken_link",
            "seq_not_contiguous",
            "mixed_sessions",
            "reserved_kind",
            *_LAYER_400,
            "bad_request",
        ],
        "The batch breaks PROTOCOL §1-§3 (`index`, `member`, `expected`, `got` say where); "
        "or as BadRequest",
    ),
    "Unauthenticated": _problem(
        401,
        ["unauthenticated"],
        "unauthenticated: no API key, or an unknown or revoked one",
        **{
            "WWW-Authenticate": {
                "required": True,
                "schema": {"type": "string", "const": "Bearer"},
            }
        },
    ),
    "Forbidden": _problem(403, ["forbidden"], "forbidden: the API key lacks the scope"),
    "NotFound": _problem(
        404,
        ["not_found"],
        "not_found: no such session for this key's tenant (also any session id that is "
        "not a lowercase UUID)",
    ),
    "MethodNotAllowed": _problem(
        405,
        ["method_not_allowed"],
        "method_not_allowed: the path has no such operation; Allow lists the methods it has",
        Allow={
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Z]+(, [A-Z]+)*$"},
        },
    ),
    "RequestTimeout": _problem(
        408,
        ["request_timeout"],
        "request_timeout: the body was not received in time (the connection closes)",
    ),
    "Conflict": _problem(
        409,
        ["seq_gap", "chain_fork"],
        "seq_gap, chain_fork: the batch does not continue the stored chain; the body "
        "carries next_seq and head_hash to resynchronize from",
    ),
    "TooLarge": _problem(
        413,
        ["too_large"],
        f"too_large: the body is over max_body_bytes ({MAX_BODY_BYTES} unless configured), "
        f"or it holds more than max_batch_events events ({MAX_BATCH_EVENTS} unless configured)",
    ),
    "UnsupportedMediaType": _problem(
        415,
        ["unsupported_media_type"],
        "unsupported_media_type: not application/json, or a charset other than UTF-8",
    ),
    "Overloaded": _problem(
        429,
        ["overloaded"],
        "overloaded: the service is shedding load (the session's inbox or the worker's "
        "pending batches are full, or too many request-body bytes are in flight); nothing "
        "was stored",
        **{"Retry-After": _RETRY_AFTER},
    ),
    "HeadersTooLarge": _layer(
        431, ["headers_too_large"], "headers_too_large: the request's headers are too large"
    ),
    "NotImplemented": _layer(
        501,
        ["not_implemented"],
        "not_implemented: a transfer coding this server does not implement",
    ),
    "Unavailable": _problem(
        503,
        ["unavailable"],
        "unavailable: the database is unreachable or too slow; a retry is always safe "
        "(a batch this attempt did store is answered duplicate)",
        **{"Retry-After": _RETRY_AFTER},
    ),
}


def _responses(*names: str) -> dict[str, Any]:
    """Responses by status from the named components: the HTTP layer's and the
    request-body budget's, which any request can get, always included."""
    status = {
        "BadRequest": "400",
        "BadParameter": "400",
        "BadBatch": "400",
        "Unauthenticated": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "RequestTimeout": "408",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedMediaType": "415",
        "Overloaded": "429",
        "HeadersTooLarge": "431",
        "NotImplemented": "501",
        "Unavailable": "503",
    }
    chosen = {
        status[n]: n for n in ("BadRequest", "Overloaded", "HeadersTooLarge", "NotImplemented")
    }
    chosen.update({status[n]: n for n in names})
    return {s: {"$ref": f"#/components/responses/{chosen[s]}"} for s in sorted(chosen)}


def _ok(
    description: str,
    schema: dict[str, Any],
    media: str = "application/json",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "headers": {"X-Request-Id": _REQUEST_ID},
            "content": {media: {"schema": schema}},
            **extra,
        }
    }


# ---- parameters -----------------------------------------------------------------------


def _number_param(name: str, low: int, high: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": f"{description}: 1 to 16 ASCII digits (no sign, no spaces) naming an "
        f"integer in {low}..{high}; anything else is 400 bad_parameter",
        "schema": _int(low, high),
    }


_PARAMETERS: dict[str, Any] = {
    "SessionIdPath": {
        "name": "session_id",
        "in": "path",
        "required": True,
        "description": "The session; one that is not a lowercase UUID is 404 not_found",
        "schema": _ref("SessionId"),
    },
    "FromSeq": _number_param("from_seq", 0, MAX_SEQ, "Only records with seq >= this (default 0)"),
    "ReplayLimit": _number_param(
        "limit", 1, MAX_SEQ, "At most this many records, lines (default: no limit)"
    ),
    "ListLimit": _number_param("limit", 1, MAX_LIST, "At most this many sessions (default 50)"),
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page, as it was returned; empty means "
        "the first page; any other value is 400 bad_parameter",
        "schema": _ref("Cursor"),
    },
}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_PUBLIC: list[dict[str, list[str]]] = []
_SESSION_LINKS = {
    name: {
        "operationId": operation,
        "parameters": {"session_id": "$response.body#/session_id"},
        "description": description,
    }
    for name, operation, description in (
        ("GetSession", "getSession", "The head of the session just written"),
        ("ReplaySession", "replaySession", "The records of the session just written"),
        ("VerifySession", "verifySession", "The verification of the session just written"),
    )
}


def _read(operation_id: str, summary: str, params: list[str], ok: dict[str, Any], bad: str) -> Any:
    """A read route: scope `read`; `bad` names its 400 response."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": _BEARER,
            "parameters": [_param(p) for p in params],
            "responses": {
                **ok,
                **_responses(
                    bad,
                    "Unauthenticated",
                    "Forbidden",
                    *(["NotFound"] if "SessionIdPath" in params else []),
                    "Unavailable",
                ),
            },
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Agent chain ingestion service",
        "version": "1.0.0",
        "description": "Chain protocol v1 (docs/protocol.md): ingest, seal, replay and verify "
        "hash-chained agent events. Every error is application/problem+json (RFC 9457) with "
        "a machine-readable `code`. A method a path does not list is 405 "
        "`method_not_allowed` with `Allow`; a path not listed here is 404 `not_found`. "
        "Any request can be refused by the HTTP layer (400, 431, 501, the connection then "
        "closes) or, when it carries a body and too many request-body bytes are in flight, "
        "with 429 `overloaded`.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key, csk_<16 lowercase hex>_<43 of A-Z a-z 0-9 _ ->, "
                "with the scope the route needs (ingest or read)",
            }
        },
        "schemas": _SCHEMAS,
        "parameters": _PARAMETERS,
        "responses": _RESPONSES,
    },
    "paths": {
        "/v1/ingest": {
            "post": {
                "operationId": "ingest",
                "summary": "Append a batch of events to a session's chain (PROTOCOL §3)",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "description": f"At most max_body_bytes ({MAX_BODY_BYTES} unless "
                    "configured), UTF-8, under the I-JSON rules of PROTOCOL §2.",
                    "content": {
                        "application/json": {
                            "schema": _object(
                                ["events"],
                                {
                                    "events": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_BATCH_EVENTS,
                                        "description": "1 to max_batch_events events "
                                        f"({MAX_BATCH_EVENTS} unless configured) of one "
                                        "session, consecutive and linked",
                                        "items": _ref("Event"),
                                    }
                                },
                            )
                        }
                    },
                },
                "responses": {
                    **_ok(
                        "Stored (or, with duplicate=true, already stored): the seal that "
                        "covers the batch",
                        _ref("IngestResult"),
                        links=_SESSION_LINKS,
                    ),
                    **_responses(
                        "BadBatch",
                        "Unauthenticated",
                        "Forbidden",
                        "RequestTimeout",
                        "Conflict",
                        "TooLarge",
                        "UnsupportedMediaType",
                        "Unavailable",
                    ),
                },
            }
        },
        "/v1/sessions": _read(
            "listSessions",
            "The tenant's sessions, newest first (keyset pagination)",
            ["ListLimit", "Cursor"],
            _ok("A page of sessions", _ref("SessionPage")),
            "BadParameter",
        ),
        "/v1/sessions/{session_id}": _read(
            "getSession",
            "A session's head: next_seq, head_hash, last seal, counts, times",
            ["SessionIdPath"],
            _ok("The head", _ref("SessionHead")),
            "BadRequest",
        ),
        "/v1/sessions/{session_id}/records": _read(
            "replaySession",
            "Replay the stored records, byte for byte, as NDJSON (PROTOCOL §5)",
            ["SessionIdPath", "FromSeq", "ReplayLimit"],
            _ok(
                "One Record a line (its JCS, ending in a newline), by seq, each seal "
                "after the event it pins; the schema describes one line",
                _ref("Record"),
                "application/x-ndjson",
            ),
            "BadParameter",
        ),
        "/v1/sessions/{session_id}/verify": _read(
            "verifySession",
            "The server re-verifies the stored chain (PROTOCOL §6)",
            ["SessionIdPath"],
            _ok("The report", _ref("VerifyReport")),
            "BadRequest",
        ),
        "/v1/keys": {
            "get": {
                "operationId": "listSealKeys",
                "summary": "Every seal key ever used, active and retired (no key needed)",
                "security": _PUBLIC,
                "responses": {
                    **_ok("The keys", _ref("SealKeys")),
                    **_responses("Unavailable"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is up",
                "security": _PUBLIC,
                "responses": {
                    **_ok("Up", _object(["status"], {"status": {"const": "ok"}})),
                    **_responses(),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Database reachable and migrations applied",
                "security": _PUBLIC,
                "responses": {
                    **_ok(
                        "Ready",
                        _object(
                            ["status", "seal_key"],
                            {
                                "status": {"const": "ready"},
                                "seal_key": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                            },
                        ),
                    ),
                    **_responses(),
                    "503": {
                        "description": "Not ready: the database is unreachable, or migrations "
                        "or the start are pending",
                        "headers": {"X-Request-Id": _REQUEST_ID},
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _object(
                                            ["status", "database"],
                                            {
                                                "status": {"const": "unavailable"},
                                                "database": {"type": "string"},
                                            },
                                        ),
                                        _object(
                                            ["status", "pending_migrations"],
                                            {
                                                "status": {"const": "starting"},
                                                "pending_migrations": {
                                                    "type": "array",
                                                    "items": {"type": "integer"},
                                                },
                                            },
                                        ),
                                    ]
                                }
                            }
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, summed over workers",
                "security": _PUBLIC,
                "responses": {
                    **_ok("Text exposition format", {"type": "string"}, "text/plain"),
                    **_responses(),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "security": _PUBLIC,
                "responses": {
                    **_ok("OpenAPI 3.1", {"type": "object"}),
                    **_responses(),
                },
            }
        },
    },
}


def routes() -> Blueprint:
    bp = Blueprint("openapi", __name__)

    @bp.get("/openapi.json")
    async def spec() -> Response:
        return json_response(SPEC)

    return bp
