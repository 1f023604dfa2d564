"""The commit of a verified batch: one transaction, one crossing of the bridge.

PROTOCOL §3 step 4–5 and §4: under the session's advisory lock and its head row
locked FOR UPDATE, compare the batch with the stored head, append the new
events and their seal in one bulk INSERT, move the head, commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import hashcore

from ..core.outcomes import ZERO_HASH, Appended, Conflict, KeyRevoked, Outcome
from .database import Connection, Database
from .locks import SESSION_HEAD

# Advisory lock, key still live, head row FOR UPDATE: migration 0002.
_LOCK_HEAD = "SELECT * FROM lock_session_head($1, $2, $3::uuid, $4)"

_STORED_HASHES = """SELECT hash FROM records
                    WHERE tenant_id = $1 AND session_id = $2 AND NOT is_seal
                      AND seq >= $3 AND seq < $4
                    ORDER BY seq"""

_COVERING_SEAL = """SELECT record FROM records
                    WHERE tenant_id = $1 AND session_id = $2 AND is_seal AND seq >= $3
                    ORDER BY seq LIMIT 1"""

# Events and their seal in one statement, and the head (created for a new
# session: the advisory lock makes the upsert race-free), in one round trip.
_APPEND = """
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


@dataclass(frozen=True)
class Submission:
    """A verified batch, and who sent it."""

    tenant_id: int
    key_id: str
    batch: hashcore.Batch


async def append_batch(
    db: Database,
    sub: Submission,
    signer: hashcore.Signer,
    clock: Callable[[], str],
) -> Outcome:
    batch = sub.batch
    sid = batch.session_id

    async def work(conn: Connection) -> Outcome:
        row = await conn.fetchrow(_LOCK_HEAD, SESSION_HEAD, sub.tenant_id, sid, sub.key_id)
        assert row is not None  # the function always returns one row
        key_live, found, *head = row
        if not key_live:
            return KeyRevoked()
        next_seq, head_hash, last_seal = head if found else (0, ZERO_HASH, ZERO_HASH)
        if batch.first_seq > next_seq:
            return Conflict(
                "seq_gap",
                next_seq,
                head_hash,
                f"the batch starts at seq {batch.first_seq} but the session continues at "
                f"seq {next_seq}",
            )
        if batch.first_seq == next_seq and batch.first_prev_hash != head_hash:
            return Conflict(
                "chain_fork",
                next_seq,
                head_hash,
                f"event 0 (seq {next_seq}) has prev_hash {batch.first_prev_hash} but the "
                f"stored head is {head_hash}",
                index=0,
            )
        # Events below next_seq must be retries: the very events already stored.
        overlap = min(next_seq, batch.last_seq + 1) - batch.first_seq
        if overlap > 0:
            stored = await conn.fetch(
                _STORED_HASHES, sub.tenant_id, sid, batch.first_seq, batch.first_seq + overlap
            )
            for i in range(overlap):
                if stored[i]["hash"] != batch.hashes[i]:
                    return Conflict(
                        "chain_fork",
                        next_seq,
                        head_hash,
                        f"event {i} (seq {batch.first_seq + i}) differs from the stored event "
                        f"with that seq (stored hash {stored[i]['hash']}, "
                        f"sent {batch.hashes[i]})",
                        index=i,
                    )
        if overlap == batch.count:
            seal = await conn.fetchval(_COVERING_SEAL, sub.tenant_id, sid, batch.last_seq)
            return Appended(sid, 0, overlap, next_seq - 1, head_hash, bytes(seal))

        new = slice(max(overlap, 0), batch.count)
        first_new = batch.first_seq + new.start
        seal = signer.seal(sid, batch.last_seq, first_new, last_seal, batch.last_hash, clock())
        seqs = batch.seqs[new]
        await conn.execute(
            _APPEND,
            sub.tenant_id,
            sid,
            [*seqs, seal.seq],
            [False] * len(seqs) + [True],
            [*batch.kinds[new], "CHAIN_SEAL"],
            [*batch.ts[new], seal.ts],
            [*batch.hashes[new], seal.hash],
            [*batch.records[new], seal.record],
            batch.last_seq + 1,
            batch.last_hash,
            seal.seq,
            seal.hash,
            batch.ts[0] if batch.first_seq == 0 else None,
            batch.ts[-1],
        )
        return Appended(sid, len(seqs), new.start, batch.last_seq, batch.last_hash, seal.record)

    return await db.transaction(work)
