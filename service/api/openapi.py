"""GET /openapi.json: every endpoint, and every error body, described once."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from .problems import TITLES
from .responses import json_response

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_UUID = {"type": "string", "format": "uuid", "pattern": "^[0-9a-f-]{36}$"}

_RECORD: dict[str, Any] = {
    "type": "object",
    "description": "A record of PROTOCOL §1 (an event), or a seal of §4 (with `signature`).",
    "required": ["session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"],
    "properties": {
        "session_id": _UUID,
        "seq": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1},
        "kind": {"type": "string", "pattern": "^[A-Za-z0-9_.:/-]{1,128}$"},
        "ts": {"type": "string", "description": "RFC 3339 UTC, e.g. 2026-01-02T03:04:05.123Z"},
        "payload": {"type": "object"},
        "prev_hash": _HEX64,
        "hash": _HEX64,
        "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
    },
}

_PROBLEM: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(TITLES)},
        "index": {"type": "integer", "description": "index of the offending event in the batch"},
        "member": {"type": "string", "description": "the offending member of that event"},
        "expected": {"type": "string"},
        "got": {"type": "string"},
        "next_seq": {"type": "integer", "description": "409 only: where the chain continues"},
        "head_hash": {**_HEX64, "description": "409 only: the stored head's hash"},
    },
}

_REPORT: dict[str, Any] = {
    "type": "object",
    "required": ["session_id", "ok", "records", "events", "seals", "keys_used", "problem"],
    "properties": {
        "session_id": _UUID,
        "ok": {"type": "boolean"},
        "records": {"type": "integer"},
        "events": {"type": "integer"},
        "seals": {"type": "integer"},
        "keys_used": {"type": "array", "items": {"type": "string"}},
        "problem": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {
                        "line": {"type": "integer"},
                        "seq": {"type": ["integer", "null"]},
                        "kind": {"type": ["string", "null"]},
                        "reason": {"type": "string"},
                        "detail": {"type": "string"},
                        "expected": {"type": ["string", "null"]},
                        "found": {"type": ["string", "null"]},
                    },
                },
            ]
        },
    },
}

_ERRORS = {
    "400": (
        "malformed_json, schema, json_rule, hash_mismatch, broken_link, "
        "seq_not_contiguous, mixed_sessions, reserved_kind, bad_request"
    ),
    "401": "unauthenticated: no key, or an unknown or revoked key",
    "403": "forbidden: the key lacks the scope",
    "404": "not_found: no such session for this key's tenant",
    "409": "seq_gap, chain_fork: carries next_seq and head_hash",
    "413": "too_large: body over max_body_bytes or more than max_batch_events events",
    "415": "unsupported_media_type: not application/json",
    "429": "overloaded: the service is shedding load; Retry-After is set",
    "503": "unavailable: the database is unreachable; Retry-After is set; nothing was stored",
}


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        s: {
            "description": _ERRORS[s],
            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
        }
        for s in statuses
    }


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> Any:
    return {"200": {"description": description, "content": {media: {"schema": schema}}}}


_SESSION_PARAM = {"name": "session_id", "in": "path", "required": True, "schema": _UUID}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Agent chain ingestion service",
        "version": "1.0.0",
        "description": "Chain protocol v1 (PROTOCOL.md): ingest, seal, replay and verify "
        "hash-chained agent events.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Record": _RECORD, "Problem": _PROBLEM, "VerifyReport": _REPORT},
    },
    "paths": {
        "/v1/ingest": {
            "post": {
                "summary": "Append a batch of events to a session's chain (PROTOCOL §3)",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["events"],
                                "additionalProperties": False,
                                "properties": {
                                    "events": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": {"$ref": "#/components/schemas/Record"},
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    **_ok(
                        "Stored (or, with duplicate=true, already stored)",
                        {
                            "type": "object",
                            "required": [
                                "session_id",
                                "accepted",
                                "duplicates",
                                "duplicate",
                                "head",
                                "seal",
                            ],
                            "properties": {
                                "session_id": _UUID,
                                "accepted": {"type": "integer"},
                                "duplicates": {"type": "integer"},
                                "duplicate": {"type": "boolean"},
                                "head": {
                                    "type": "object",
                                    "properties": {"seq": {"type": "integer"}, "hash": _HEX64},
                                },
                                "seal": {"$ref": "#/components/schemas/Record"},
                            },
                        },
                    ),
                    **_errors("400", "401", "403", "409", "413", "415", "429", "503"),
                },
            }
        },
        "/v1/sessions": {
            "get": {
                "summary": "The tenant's sessions, newest first (keyset pagination)",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "next_cursor of the previous page",
                    },
                ],
                "responses": {
                    **_ok(
                        "A page of sessions",
                        {
                            "type": "object",
                            "properties": {
                                "sessions": {"type": "array", "items": {"type": "object"}},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **_errors("400", "401", "403", "503"),
                },
            }
        },
        "/v1/sessions/{session_id}": {
            "get": {
                "summary": "A session's head: next_seq, head_hash, last seal, counts, times",
                "security": _BEARER,
                "parameters": [_SESSION_PARAM],
                "responses": {
                    **_ok(
                        "The head",
                        {
                            "type": "object",
                            "properties": {
                                "next_seq": {"type": "integer"},
                                "head_hash": _HEX64,
                                "events": {"type": "integer"},
                                "seals": {"type": "integer"},
                                "last_seal": {"$ref": "#/components/schemas/Record"},
                                "first_event_ts": {"type": ["string", "null"]},
                                "last_event_ts": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **_errors("401", "403", "404", "503"),
                },
            }
        },
        "/v1/sessions/{session_id}/records": {
            "get": {
                "summary": "Replay the stored records, byte for byte, as NDJSON (PROTOCOL §5)",
                "security": _BEARER,
                "parameters": [
                    _SESSION_PARAM,
                    {
                        "name": "from_seq",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {
                    **_ok(
                        "One JCS record a line, by seq, each seal after its event",
                        {"type": "string"},
                        "application/x-ndjson",
                    ),
                    **_errors("400", "401", "403", "404", "503"),
                },
            }
        },
        "/v1/sessions/{session_id}/verify": {
            "get": {
                "summary": "The server re-verifies the stored chain (PROTOCOL §6)",
                "security": _BEARER,
                "parameters": [_SESSION_PARAM],
                "responses": {
                    **_ok("The report", {"$ref": "#/components/schemas/VerifyReport"}),
                    **_errors("401", "403", "404", "503"),
                },
            }
        },
        "/v1/keys": {
            "get": {
                "summary": "Every seal key ever used, active and retired (no key needed)",
                "responses": {
                    **_ok(
                        "The keys",
                        {
                            "type": "object",
                            "properties": {
                                "keys": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "key_id": {
                                                "type": "string",
                                                "pattern": "^[0-9a-f]{16}$",
                                            },
                                            "alg": {"const": "Ed25519"},
                                            "public_key": {
                                                "type": "string",
                                                "pattern": "^[0-9a-f]{64}$",
                                            },
                                            "active": {"type": "boolean"},
                                        },
                                    },
                                }
                            },
                        },
                    ),
                    **_errors("503"),
                },
            }
        },
        "/healthz": {
            "get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Database reachable and migrations applied",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
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
