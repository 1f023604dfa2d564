"""Baseline 2 of bench/ingest_bench.py: a conventional ingest service.

FastAPI on uvicorn, asyncpg on plain asyncio, every check and hash in Python
(bench/reference.py: json with a duplicate-key hook, per-event schema checks,
SHA-256 of `rfc8785.dumps(event without hash)`, links), then one asyncpg
transaction with the service's own SQL (service/storage/queries.py) and a seal
signed with `cryptography`'s Ed25519. It serves the happy path of
docs/protocol.md §3 the way a straightforward implementation would; it does not
deduplicate retries (an overlapping batch is a 409). Bench only.

    DATABASE_URL=postgresql://... uvicorn baseline_app:app --app-dir bench --workers 2
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from reference import ZERO, Batch, Rejected, record_hash, verify

from service.storage import queries
from service.storage.locks import SESSION_HEAD

MAX_BODY = 8 * 1024 * 1024
MAX_EVENTS = 1000
TOKEN_RE = re.compile(r"csk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def problem(status: int, code: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": code, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


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
    seal["hash"] = record_hash(seal)
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
    row = await pool.fetchrow(queries.FIND_API_KEY, key_id)
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
        batch = verify(body, MAX_EVENTS)
        return await commit(pool, tenant_id, key_id, batch)
    except Rejected as r:
        return problem(r.status, r.code, r.detail)


async def commit(pool: asyncpg.Pool, tenant_id: int, key_id: str, b: Batch) -> Response:
    sid, first_seq, last_seq, last_hash = b.session_id, b.first_seq, b.last_seq, b.last_hash
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(queries.LOCK_SESSION_HEAD, SESSION_HEAD, tenant_id, sid, key_id)
        assert row is not None
        key_live, found, *head = row
        if not key_live:
            raise Rejected(401, "unauthenticated", "the API key was revoked")
        next_seq, head_hash, last_seal = tuple(head) if found else (0, ZERO, ZERO)
        if first_seq > next_seq:
            raise Rejected(409, "seq_gap", f"the session continues at seq {next_seq}")
        if first_seq < next_seq or b.first_prev_hash != head_hash:
            raise Rejected(409, "chain_fork", f"the stored head is {next_seq} {head_hash}")
        seal, seal_record = make_seal(sid, last_seq, first_seq, last_seal, last_hash)
        await conn.execute(
            APPEND,
            tenant_id,
            sid,
            [*b.seqs, last_seq],
            [False] * b.count + [True],
            [*b.kinds, "CHAIN_SEAL"],
            [*b.ts, seal["ts"]],
            [*b.hashes, seal["hash"]],
            [*b.records, seal_record],
            last_seq + 1,
            last_hash,
            last_seq,
            seal["hash"],
            b.ts[0] if first_seq == 0 else None,
            b.ts[-1],
        )
    return JSONResponse(
        {
            "session_id": sid,
            "accepted": b.count,
            "duplicates": 0,
            "duplicate": False,
            "head": {"seq": last_seq, "hash": last_hash},
            "seal": seal,
        }
    )
