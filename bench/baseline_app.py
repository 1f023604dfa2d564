"""Baseline 2 of bench/ingest_bench.py: a conventional ingest service.

FastAPI on uvicorn, asyncpg on plain asyncio, every check and hash in Python
(json with a duplicate-key hook, per-event schema checks, SHA-256 of
`rfc8785.dumps(event without hash)`, links), then one asyncpg transaction with
the service's own SQL and a seal signed with `cryptography`'s Ed25519. It serves
the happy path of PROTOCOL §3 the way a straightforward implementation would;
it does not deduplicate retries (an overlapping batch is a 409). Bench only.

    DATABASE_URL=postgresql://... uvicorn baseline_app:app --app-dir bench --workers 2
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import chain_sql
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

ZERO = "0" * 64
MAX_BODY = 8 * 1024 * 1024
MAX_EVENTS = 1000
MAX_SEQ = 2**53 - 1
MEMBERS = frozenset({"session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"})
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KIND_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
HEX_RE = re.compile(r"[0-9a-f]{64}")
TOKEN_RE = re.compile(r"csk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class Rejected(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def problem(status: int, code: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": code, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise Rejected(400, "json_rule", "an object has two members with the same name")
    return obj


def _no_constant(name: str) -> Any:
    raise Rejected(400, "json_rule", f"{name} is not a JSON number")


def _jcs(value: Any, where: str) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise Rejected(400, "json_rule", f"{where}: {exc}") from exc


def check_event(i: int, ev: Any) -> None:
    if not isinstance(ev, dict) or ev.keys() != MEMBERS:
        raise Rejected(400, "schema", f"event {i} must have exactly the members {sorted(MEMBERS)}")
    if not (isinstance(ev["session_id"], str) and UUID_RE.fullmatch(ev["session_id"])):
        raise Rejected(400, "schema", f"event {i}: session_id")
    seq = ev["seq"]
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ):
        raise Rejected(400, "schema", f"event {i}: seq")
    kind = ev["kind"]
    if not (isinstance(kind, str) and KIND_RE.fullmatch(kind)):
        raise Rejected(400, "schema", f"event {i}: kind")
    if kind.startswith("CHAIN_"):
        raise Rejected(400, "reserved_kind", f"event {i}: kind {kind} is reserved")
    if not (isinstance(ev["ts"], str) and TS_RE.fullmatch(ev["ts"])):
        raise Rejected(400, "schema", f"event {i}: ts")
    if not isinstance(ev["payload"], dict):
        raise Rejected(400, "schema", f"event {i}: payload")
    for member in ("prev_hash", "hash"):
        if not (isinstance(ev[member], str) and HEX_RE.fullmatch(ev[member])):
            raise Rejected(400, "schema", f"event {i}: {member}")


def verify(body: bytes) -> list[dict[str, Any]]:
    """Parse, check and hash; adds "_record" (JCS of the whole event) to each event."""
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected(400, "malformed_json", str(exc)) from exc
    if not isinstance(doc, dict) or doc.keys() != {"events"} or not isinstance(doc["events"], list):
        raise Rejected(400, "schema", 'the body must be {"events": [...]}')
    events = doc["events"]
    if not events:
        raise Rejected(400, "schema", "no events")
    if len(events) > MAX_EVENTS:
        raise Rejected(413, "too_large", f"more than {MAX_EVENTS} events")
    for i, ev in enumerate(events):
        check_event(i, ev)
    sid, first = events[0]["session_id"], events[0]["seq"]
    prev = None
    for i, ev in enumerate(events):
        if ev["session_id"] != sid:
            raise Rejected(400, "mixed_sessions", f"event {i}: another session")
        if ev["seq"] != first + i:
            raise Rejected(400, "seq_not_contiguous", f"event {i}: seq {ev['seq']}")
        given = ev.pop("hash")
        canon = _jcs(ev, f"event {i}")
        digest = hashlib.sha256(canon).hexdigest()
        if digest != given:
            raise Rejected(400, "hash_mismatch", f"event {i}: expected {digest}, got {given}")
        if (prev is not None and ev["prev_hash"] != prev) or (
            ev["seq"] == 0 and ev["prev_hash"] != ZERO
        ):
            raise Rejected(400, "broken_link", f"event {i}: prev_hash")
        prev = ev["hash"] = digest
        # JCS of the whole event without a second canonicalization: "hash" sorts first.
        ev["_record"] = b'{"hash":"' + digest.encode() + b'",' + canon[1:]
    return events


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_seal(
    sid: str, seq: int, first_seq: int, prev_seal: str, head_hash: str
) -> tuple[dict[str, Any], bytes]:
    seal: dict[str, Any] = {
        "session_id": sid,
        "seq": seq,
        "kind": "CHAIN_SEAL",
        "ts": utc_now(),
        "payload": {"first_seq": first_seq, "prev_seal": prev_seal, "key_id": KEY_ID},
        "prev_hash": head_hash,
    }
    seal["hash"] = hashlib.sha256(rfc8785.dumps(seal)).hexdigest()
    seal["signature"] = SEAL_KEY.sign(bytes.fromhex(seal["hash"])).hex()
    return seal, rfc8785.dumps(seal)


SEAL_KEY = Ed25519PrivateKey.generate()
KEY_ID = hashlib.sha256(
    SEAL_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).hexdigest()[:16]
POOL: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global POOL
    POOL = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=1,
        max_size=int(os.environ.get("BASELINE_POOL_SIZE", "8")),
    )
    try:
        yield
    finally:
        await POOL.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def authenticate(pool: asyncpg.Pool, request: Request) -> tuple[int, str]:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    match = TOKEN_RE.fullmatch(token.strip()) if scheme.lower() == "bearer" else None
    if match is None:
        raise Rejected(401, "unauthenticated", "send 'Authorization: Bearer <api key>'")
    key_id, secret = match[1], match[2]
    row = await pool.fetchrow(chain_sql.FIND_KEY, key_id)
    if (
        row is None
        or row["revoked_at"] is not None
        or not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), row["secret_hash"])
    ):
        raise Rejected(401, "unauthenticated", "unknown or revoked API key")
    if "ingest" not in row["scopes"]:
        raise Rejected(403, "forbidden", "this API key lacks the 'ingest' scope")
    return row["tenant_id"], key_id


# A conventional write: events, seal and head in one statement of a transaction.
APPEND = """
WITH appended AS (
    INSERT INTO records (tenant_id, session_id, seq, is_seal, kind, ts, hash, record)
    SELECT $1, $2, r.seq, r.is_seal, r.kind, r.ts, r.hash, r.record
    FROM unnest($3::bigint[], $4::boolean[], $5::text[], $6::text[], $7::text[], $8::bytea[])
         AS r (seq, is_seal, kind, ts, hash, record)
)
INSERT INTO sessions AS s (tenant_id, session_id, next_seq, head_hash, last_seal_seq,
                           last_seal_hash, seal_count, first_ts, last_ts)
VALUES ($1, $2, $9, $10, $11, $12, 1, $13, $14)
ON CONFLICT (tenant_id, session_id) DO UPDATE
SET next_seq = EXCLUDED.next_seq, head_hash = EXCLUDED.head_hash,
    last_seal_seq = EXCLUDED.last_seal_seq, last_seal_hash = EXCLUDED.last_seal_hash,
    seal_count = s.seal_count + 1, first_ts = coalesce(s.first_ts, EXCLUDED.first_ts),
    last_ts = EXCLUDED.last_ts, updated_at = clock_timestamp()
"""


@app.post("/v1/ingest")
async def ingest(request: Request) -> Response:
    pool = POOL
    assert pool is not None
    try:
        tenant_id, key_id = await authenticate(pool, request)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Rejected(415, "unsupported_media_type", "send application/json")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise Rejected(413, "too_large", f"the body is over {MAX_BODY} bytes")
        events = verify(body)
        return await commit(pool, tenant_id, key_id, events)
    except Rejected as r:
        return problem(r.status, r.code, r.detail)


async def commit(
    pool: asyncpg.Pool, tenant_id: int, key_id: str, events: list[dict[str, Any]]
) -> Response:
    sid = events[0]["session_id"]
    first_seq, last_seq = events[0]["seq"], events[-1]["seq"]
    last_hash = events[-1]["hash"]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            chain_sql.LOCK_HEAD, chain_sql.SESSION_HEAD, tenant_id, sid, key_id
        )
        key_live, found, *head = row
        if not key_live:
            raise Rejected(401, "unauthenticated", "the API key was revoked")
        next_seq, head_hash, last_seal = tuple(head) if found else (0, ZERO, ZERO)
        if first_seq > next_seq:
            raise Rejected(409, "seq_gap", f"the session continues at seq {next_seq}")
        if first_seq < next_seq or events[0]["prev_hash"] != head_hash:
            raise Rejected(409, "chain_fork", f"the stored head is {next_seq} {head_hash}")
        seal, seal_record = make_seal(sid, last_seq, first_seq, last_seal, last_hash)
        await conn.execute(
            APPEND,
            tenant_id,
            sid,
            [*(e["seq"] for e in events), last_seq],
            [False] * len(events) + [True],
            [*(e["kind"] for e in events), "CHAIN_SEAL"],
            [*(e["ts"] for e in events), seal["ts"]],
            [*(e["hash"] for e in events), seal["hash"]],
            [*(e["_record"] for e in events), seal_record],
            last_seq + 1,
            last_hash,
            last_seq,
            seal["hash"],
            events[0]["ts"] if first_seq == 0 else None,
            events[-1]["ts"],
        )
    return JSONResponse(
        {
            "session_id": sid,
            "accepted": len(events),
            "duplicates": 0,
            "duplicate": False,
            "head": {"seq": last_seq, "hash": last_hash},
            "seal": seal,
        }
    )
