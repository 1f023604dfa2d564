"""Reading sessions back: heads, listings, and the stored records in replay order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .database import Connection, Database
from .seal_keys import SealPublicKey

# Records of at most INLINE_BYTES come with the cursor; a larger one comes as
# NULL with its key and is read alone (BY_KEY), so that a read of many records
# holds a bounded number of bytes (Database.records), and so that on Citus the
# entry node does not buffer a session's large records before the first chunk.
# The key comes only with a large record (NULLs otherwise): decoding it for
# every row (a UUID object each) cut a cursor's rows/s to 0.75x (asyncpg, 1M
# rows of ~380 B).
INLINE_BYTES = 4096
_LARGE = f"octet_length(record) > {INLINE_BYTES}"
_COLUMNS = f"""CASE WHEN NOT {_LARGE} THEN record END,
               CASE WHEN {_LARGE} THEN tenant_id END, CASE WHEN {_LARGE} THEN session_id END,
               CASE WHEN {_LARGE} THEN seq END, CASE WHEN {_LARGE} THEN is_seal END"""

BY_KEY = """SELECT record FROM records
            WHERE tenant_id = $1 AND session_id = $2 AND seq = $3 AND is_seal = $4"""

# Replay order (PROTOCOL §5): by seq, the event before its seal. The primary
# key (tenant_id, session_id, seq, is_seal) serves it without a sort.
REPLAY = f"""SELECT {_COLUMNS} FROM records
             WHERE tenant_id = $1 AND session_id = $2 AND seq >= $3
             ORDER BY seq, is_seal
             LIMIT $4"""

# The whole chain as of a head read just before: records are append-only and
# each batch commits with its seal and the new head, so `seq < next_seq` holds
# exactly the records of that head, however many batches land meanwhile.
CHAIN = f"""SELECT {_COLUMNS} FROM records
            WHERE tenant_id = $1 AND session_id = $2 AND seq < $3
            ORDER BY seq, is_seal"""


@dataclass(frozen=True)
class SessionHead:
    """A session's head as the read side shows it: the chain's head, counts, times,
    and the last seal's whole record. (`core.commit.ChainHead` is the commit's
    narrower view: next_seq, head_hash and the last seal's hash.)"""

    session_id: str
    next_seq: int
    head_hash: str
    seal_count: int
    last_seal_record: bytes | None
    first_ts: str | None
    last_ts: str | None
    created_at: datetime
    updated_at: datetime


_HEAD = """SELECT s.session_id::text AS session_id, s.next_seq, s.head_hash, s.seal_count,
                  s.first_ts, s.last_ts, s.created_at, s.updated_at,
                  (SELECT r.record FROM records r
                   WHERE r.tenant_id = s.tenant_id AND r.session_id = s.session_id
                     AND r.seq = s.last_seal_seq AND r.is_seal) AS last_seal
           FROM sessions s WHERE s.tenant_id = $1 AND s.session_id = $2"""


async def head(db: Database, tenant_id: int, session_id: str) -> SessionHead | None:
    async def work(conn: Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(_HEAD, tenant_id, session_id)

    row = await db.run(work)
    if row is None:
        return None
    seal = row["last_seal"]
    return SessionHead(
        session_id=row["session_id"],
        next_seq=row["next_seq"],
        head_hash=row["head_hash"],
        seal_count=row["seal_count"],
        last_seal_record=bytes(seal) if seal is not None else None,
        first_ts=row["first_ts"],
        last_ts=row["last_ts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    next_seq: int
    seal_count: int
    first_ts: str | None
    last_ts: str | None
    created_at: datetime


async def newest(
    db: Database, tenant_id: int, limit: int, after: tuple[datetime, str] | None
) -> list[SessionSummary]:
    """The tenant's sessions, newest first, strictly after the keyset `after`."""

    async def work(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            """SELECT session_id::text AS session_id, next_seq, seal_count, first_ts, last_ts,
                      created_at
               FROM sessions
               WHERE tenant_id = $1
                 AND ($2::timestamptz IS NULL OR (created_at, session_id) < ($2, $3::uuid))
               ORDER BY created_at DESC, session_id DESC
               LIMIT $4""",
            tenant_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )

    return [
        SessionSummary(
            r["session_id"],
            r["next_seq"],
            r["seal_count"],
            r["first_ts"],
            r["last_ts"],
            r["created_at"],
        )
        for r in await db.run(work)
    ]


async def tenants_holding(db: Database, session_id: str) -> list[tuple[int, str]]:
    """Every (tenant_id, tenant name) that has a session with this id."""

    async def work(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            """SELECT t.id, t.name FROM sessions s JOIN tenants t ON t.id = s.tenant_id
               WHERE s.session_id = $1 ORDER BY t.name""",
            session_id,
        )

    return [(r["id"], r["name"]) for r in await db.run(work)]


async def seal_keys(
    db: Database, tenant_id: int, session_id: str, below_seq: int
) -> tuple[list[SealPublicKey], list[str]]:
    """The public keys that signed the session's seals below `below_seq`, and the
    ids of any such key the database does not hold (it would fail verification)."""

    async def work(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            """WITH used AS (
                   SELECT DISTINCT convert_from(record, 'UTF8')::jsonb #>> '{payload,key_id}'
                          AS key_id
                   FROM records
                   WHERE tenant_id = $1 AND session_id = $2 AND is_seal AND seq < $3)
               SELECT u.key_id, k.public_key, k.active
               FROM used u LEFT JOIN signing_keys k USING (key_id)
               ORDER BY u.key_id""",
            tenant_id,
            session_id,
            below_seq,
        )

    rows = await db.run(work)
    found = [
        SealPublicKey(r["key_id"], bytes(r["public_key"]), r["active"])
        for r in rows
        if r["public_key"] is not None
    ]
    missing = [r["key_id"] for r in rows if r["public_key"] is None]
    return found, missing
