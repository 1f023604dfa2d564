"""Public halves of the server's Ed25519 seal keys (PROTOCOL §4, GET /v1/keys).

(The table is named `signing_keys`: a seal key is the key that signs seals.)
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from .database import Connection, Database
from .locks import SEAL_KEYS


@dataclass(frozen=True)
class SealPublicKey:
    key_id: str
    public_key: bytes
    active: bool


async def register(db: Database, key_id: str, public_key: bytes, *, activate: bool) -> None:
    """Record a key; with `activate`, make it the only active one (a rotation).

    Without `activate` a key already known keeps its state, and a new one is
    recorded active only if no key is active yet (first start).
    """

    async def work(conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", SEAL_KEYS)
        # The advisory lock is the node's own; on a Citus cluster a process may be
        # connected to any node, and LOCK TABLE on a reference table is taken on
        # every node. (Readers are not blocked.)
        await conn.execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        known = await conn.fetchval("SELECT active FROM signing_keys WHERE key_id = $1", key_id)
        any_active = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active)")
        if known is None:
            active = activate or not any_active
            await conn.execute(
                "INSERT INTO signing_keys (key_id, public_key, active) VALUES ($1, $2, $3)",
                key_id,
                public_key,
                active,
            )
        if activate:
            # now() read first: Citus refuses it inside CASE/COALESCE of an UPDATE.
            now = await conn.fetchval("SELECT now()")
            await conn.execute(
                """UPDATE signing_keys SET active = (key_id = $1),
                       retired_at = CASE WHEN key_id = $1 THEN NULL
                                         ELSE coalesce(retired_at, $2::timestamptz) END""",
                key_id,
                now,
            )

    await db.transaction(work)


async def all_seal_keys(db: Database) -> list[SealPublicKey]:
    async def work(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT key_id, public_key, active FROM signing_keys ORDER BY created_at, key_id"
        )

    rows = await db.run(work)
    return [SealPublicKey(r["key_id"], bytes(r["public_key"]), r["active"]) for r in rows]


async def active_seal_key_id(db: Database) -> str | None:
    """The id of the seal key servers should sign with (the last rotation's)."""

    async def work(conn: Connection) -> str | None:
        value = await conn.fetchval("SELECT key_id FROM signing_keys WHERE active LIMIT 1")
        return None if value is None else str(value)

    return await db.run(work)
