"""The statements on the ingest hot path: their SQL text, and how the commit's
rows are packed into their arguments.

Kept apart from the modules that run them so that they can be imported without
the trio-asyncio bridge (importing `trio_asyncio` patches asyncio's loop policy
process-wide, STACK_NOTES trap 5): the benchmarks' plain-asyncio baselines run
exactly these statements, with exactly these arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Advisory lock, API key still live, head row FOR UPDATE (migration 0002).
LOCK_SESSION_HEAD = "SELECT * FROM lock_session_head($1, $2, $3::uuid, $4)"

# The stored hashes of a session's events with from <= seq < to, in seq order.
STORED_HASHES = """SELECT hash FROM records
                   WHERE tenant_id = $1 AND session_id = $2 AND NOT is_seal
                     AND seq >= $3 AND seq < $4
                   ORDER BY seq"""

# The first seal at or after a seq: the one that covers that event.
COVERING_SEAL = """SELECT record FROM records
                   WHERE tenant_id = $1 AND session_id = $2 AND is_seal AND seq >= $3
                   ORDER BY seq LIMIT 1"""

# Events, their seal and the new head, if the head is still the one the seal
# was made against: 'appended', 'moved' (nothing written) or 'revoked'
# (migration 0004; the arguments are `AppendArgs.values()`).
APPEND_AT_HEAD = """SELECT append_packed_at_head($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9,
                                                $10, $11, $12, $13, $14, $15, $16, $17, $18)"""

# Several sessions' APPEND_AT_HEAD in one statement, each batch all-or-nothing,
# the sessions locked in one fixed order: one status per batch, in the order
# given, 'failed <SQLSTATE> <message>' for a batch whose write raised (migration
# 0005; the arguments are `group_args`).
APPEND_GROUP = """SELECT append_packed_group($1, $2, $3::uuid[], $4, $5, $6, $7, $8, $9, $10,
                                            $11, $12, $13, $14, $15, $16, $17, $18, $19)"""

# An API key and its tenant, by the key's id.
FIND_API_KEY = """SELECT k.key_id, k.tenant_id, t.name AS tenant, k.secret_hash, k.scopes,
                         k.created_at, k.revoked_at
                  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                  WHERE k.key_id = $1"""


@dataclass(frozen=True)
class PackedRows:
    """The rows of one commit, the small columns as scalars rather than arrays
    (asyncpg encodes an array element by element): events with contiguous seqs
    from `first_seq`, their kinds, timestamps and hashes newline-joined, their
    records as they are; then the seal."""

    first_seq: int
    kinds: str
    ts: str
    hashes: str
    records: Sequence[bytes]
    seal_ts: str
    seal_hash: str
    seal_record: bytes


def pack_rows(
    first_seq: int,
    kinds: Sequence[str],
    ts: Sequence[str],
    hashes: Sequence[str],
    records: Sequence[bytes],
    seal: tuple[str, str, bytes],
) -> PackedRows:
    """`seal` is (ts, hash, record)."""
    seal_ts, seal_hash, seal_record = seal
    return PackedRows(
        first_seq,
        "\n".join(kinds),
        "\n".join(ts),
        "\n".join(hashes),
        records,
        seal_ts,
        seal_hash,
        seal_record,
    )


@dataclass(frozen=True)
class AppendArgs:
    """One batch's write: APPEND_AT_HEAD's arguments. `head` is the head the seal
    was made against (next_seq, head_hash, last seal's hash)."""

    lock_namespace: int
    tenant_id: int
    session_id: str
    api_key_id: str
    head: tuple[int, str, str]
    rows: PackedRows
    new_head_hash: str
    first_ts: str | None
    last_ts: str

    def values(self) -> tuple[object, ...]:
        """The arguments, in APPEND_AT_HEAD's order."""
        rows = self.rows
        return (
            self.lock_namespace,
            self.tenant_id,
            self.session_id,
            self.api_key_id,
            *self.head,
            rows.first_seq,
            rows.kinds,
            rows.ts,
            rows.hashes,
            rows.records,
            rows.seal_ts,
            rows.seal_hash,
            rows.seal_record,
            self.new_head_hash,
            self.first_ts,
            self.last_ts,
        )


def group_args(batches: Sequence[AppendArgs]) -> tuple[object, ...]:
    """The arguments of APPEND_GROUP for several batches (of distinct sessions, all
    in one lock namespace): APPEND_AT_HEAD's, one array per column, but the
    records, which are all the batches' in one array, with where each batch's
    start (1-based)."""
    starts: list[int] = []
    records: list[bytes] = []
    for b in batches:
        starts.append(len(records) + 1)
        records.extend(b.rows.records)
    rows = [b.rows for b in batches]
    return (
        batches[0].lock_namespace,
        [b.tenant_id for b in batches],
        [b.session_id for b in batches],
        [b.api_key_id for b in batches],
        [b.head[0] for b in batches],
        [b.head[1] for b in batches],
        [b.head[2] for b in batches],
        [r.first_seq for r in rows],
        [r.kinds for r in rows],
        [r.ts for r in rows],
        [r.hashes for r in rows],
        starts,
        records,
        [r.seal_ts for r in rows],
        [r.seal_hash for r in rows],
        [r.seal_record for r in rows],
        [b.new_head_hash for b in batches],
        [b.first_ts for b in batches],
        [b.last_ts for b in batches],
    )
