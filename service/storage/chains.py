"""The commit's statements on one connection: plain arguments in, plain rows out.

`core.commit` composes them inside one `Database.run` or `Database.transaction`,
so an attempt crosses the bridge once (STACK_NOTES trap 1). The order inside each
(advisory lock, API key still live, head row FOR UPDATE) is fixed by the
functions of migration 0002.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import queries
from .database import Connection
from .locks import SESSION_HEAD


@dataclass(frozen=True)
class StoredHead:
    """A session's head row: where its chain continues, and its last seal's hash."""

    next_seq: int
    head_hash: str
    last_seal_hash: str


async def lock_session_head(
    conn: Connection, tenant_id: int, session_id: str, api_key_id: str
) -> tuple[bool, StoredHead | None]:
    """Take the session's advisory lock and its head row FOR UPDATE (the first
    statement of a transaction: both are held until it ends).

    Returns whether the API key is still live, and the head (None: the session
    has no row yet, nothing was ever committed to it).
    """
    row = await conn.fetchrow(
        queries.LOCK_SESSION_HEAD, SESSION_HEAD, tenant_id, session_id, api_key_id
    )
    assert row is not None  # the function always returns one row
    live, found, next_seq, head_hash, last_seal_hash = row
    return bool(live), StoredHead(next_seq, head_hash, last_seal_hash) if found else None


async def stored_hashes(
    conn: Connection, tenant_id: int, session_id: str, from_seq: int, to_seq: int
) -> list[str]:
    """The hashes of the stored events with `from_seq <= seq < to_seq`, in seq order."""
    rows = await conn.fetch(queries.STORED_HASHES, tenant_id, session_id, from_seq, to_seq)
    return [row[0] for row in rows]


async def covering_seal(conn: Connection, tenant_id: int, session_id: str, seq: int) -> bytes:
    """The stored seal that covers the event at `seq` (the first seal at or after it)."""
    return bytes(await conn.fetchval(queries.COVERING_SEAL, tenant_id, session_id, seq))


def append_args(
    tenant_id: int,
    session_id: str,
    api_key_id: str,
    head: tuple[int, str, str],
    rows: queries.PackedRows,
    new_head_hash: str,
    first_ts: str | None,
    last_ts: str,
) -> queries.AppendArgs:
    """One batch's write: insert `rows` (events, then their seal) and move the head
    from `head` (next_seq, head_hash, last seal's hash) past them."""
    return queries.AppendArgs(
        SESSION_HEAD,
        tenant_id,
        session_id,
        api_key_id,
        head,
        rows,
        new_head_hash,
        first_ts,
        last_ts,
    )


async def append_at_head(conn: Connection, batch: queries.AppendArgs) -> str:
    """Write one batch (`append_args`) if its head is still the one given: one
    statement, its own transaction unless inside one.

    Returns 'appended', 'moved' (the head is not `head` any more: nothing was
    written) or 'revoked' (the API key was revoked: nothing was written).
    """
    return str(await conn.fetchval(queries.APPEND_AT_HEAD, *batch.values()))


async def append_group(conn: Connection, batches: Sequence[queries.AppendArgs]) -> list[str]:
    """Write several sessions' batches (one each) in one statement, each as
    `append_at_head` would, all-or-nothing per batch, the sessions locked in a
    fixed order. Returns their statuses in the order given: those of
    `append_at_head`, or 'failed <SQLSTATE> <message>' (that batch wrote nothing).
    """
    statuses = await conn.fetchval(queries.APPEND_GROUP, *queries.group_args(batches))
    return [str(s) for s in statuses]
