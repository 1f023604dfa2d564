"""Tenants and their API keys (the keys clients authenticate with; never seal keys)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from . import queries
from .database import Connection, Database


@dataclass(frozen=True)
class ApiKeyRow:
    api_key_id: str
    tenant_id: int
    tenant: str
    secret_hash: bytes
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


_KEY_COLUMNS = """k.key_id, k.tenant_id, t.name AS tenant, k.secret_hash, k.scopes,
                  k.created_at, k.revoked_at"""


def _api_key_row(row: asyncpg.Record) -> ApiKeyRow:
    return ApiKeyRow(
        api_key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        tenant=row["tenant"],
        secret_hash=bytes(row["secret_hash"]),
        scopes=frozenset(row["scopes"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create_api_key(
    db: Database, tenant: str, scopes: Iterable[str], api_key_id: str, secret_hash: bytes
) -> None:
    """Store an API key for `tenant`, creating the tenant on first use."""

    async def work(conn: Connection) -> None:
        tenant_id = await conn.fetchval(
            """INSERT INTO tenants (name) VALUES ($1)
               ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
               RETURNING id""",
            tenant,
        )
        await conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_hash, scopes) VALUES ($1, $2, $3, $4)",
            api_key_id,
            tenant_id,
            secret_hash,
            sorted(scopes),
        )

    await db.transaction(work)


async def find_api_key(db: Database, api_key_id: str) -> ApiKeyRow | None:
    async def work(conn: Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(queries.FIND_API_KEY, api_key_id)

    row = await db.run(work)
    return None if row is None else _api_key_row(row)


async def list_api_keys(db: Database, tenant: str | None = None) -> list[ApiKeyRow]:
    async def work(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"""SELECT {_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                WHERE $1::text IS NULL OR t.name = $1
                ORDER BY t.name, k.created_at""",
            tenant,
        )

    return [_api_key_row(r) for r in await db.run(work)]


async def revoke_api_key(db: Database, api_key_id: str) -> bool:
    """Revoke a key; False if there is no such key or it was already revoked."""

    async def work(conn: Connection) -> str:
        return await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
            api_key_id,
        )

    return await db.transaction(work) == "UPDATE 1"
