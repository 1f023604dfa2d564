"""The commit of a verified batch (PROTOCOL §3 steps 4–5, §4).

Two paths, one write statement (`append_at_head`, migration 0002):
- fast: the session's actor remembers the head its last commit left. A batch
  that continues it is sealed against that head and written by ONE statement,
  its own transaction, which re-checks the head under the advisory lock and the
  row lock, and writes nothing if another writer moved it;
- full: otherwise, one transaction takes the locks, reads the head, judges the
  batch against it (append, retries, 409 seq_gap / chain_fork) and writes.
Either way, one crossing of the bridge per attempt.
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

# Events, their seal and the new head, if the head is still the one the seal
# was made against: 'appended', 'moved' (nothing written) or 'revoked'.
_APPEND_AT_HEAD = """SELECT append_at_head($1, $2, $3::uuid, $4, $5, $6, $7,
                                          $8, $9, $10, $11, $12, $13,
                                          $14, $15, $16, $17, $18, $19)"""


@dataclass(frozen=True)
class Head:
    """A session's chain head, as a commit left it."""

    next_seq: int
    head_hash: str
    last_seal: str


EMPTY_HEAD = Head(0, ZERO_HASH, ZERO_HASH)


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
    known: Head | None = None,
) -> tuple[Outcome, Head | None]:
    """Commit `sub`; `known` is the head this process last left (None: unknown).

    Returns the outcome and the head after it, when that is known.
    """
    batch = sub.batch
    expected = known if known is not None else EMPTY_HEAD if batch.first_seq == 0 else None
    if (
        expected is not None
        and batch.first_seq == expected.next_seq
        and batch.first_prev_hash == expected.head_hash
    ):
        seal = _seal(sub, signer, clock, expected, batch.first_seq)

        async def fast(conn: Connection) -> str:
            return str(await conn.fetchval(_APPEND_AT_HEAD, *_write_args(sub, expected, seal, 0)))

        status = await db.run(fast)
        if status == "appended":
            return _appended(sub, seal, 0), Head(batch.last_seq + 1, batch.last_hash, seal.hash)
        if status == "revoked":
            return KeyRevoked(), None
        # 'moved': another writer got there first; judge the batch under the lock.
    return await db.transaction(lambda conn: _judge_and_write(conn, sub, signer, clock))


def _seal(
    sub: Submission,
    signer: hashcore.Signer,
    clock: Callable[[], str],
    head: Head,
    first_new: int,
) -> hashcore.Seal:
    batch = sub.batch
    return signer.seal(
        batch.session_id, batch.last_seq, first_new, head.last_seal, batch.last_hash, clock()
    )


def _write_args(sub: Submission, head: Head, seal: hashcore.Seal, skip: int) -> list[object]:
    """Arguments of `append_at_head` for the batch's events from index `skip` on."""
    batch = sub.batch
    new = slice(skip, batch.count)
    n = batch.count - skip
    return [
        SESSION_HEAD,
        sub.tenant_id,
        batch.session_id,
        sub.key_id,
        head.next_seq,
        head.head_hash,
        head.last_seal,
        [*batch.seqs[new], seal.seq],
        [False] * n + [True],
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
    ]


def _appended(sub: Submission, seal: hashcore.Seal, skip: int) -> Appended:
    batch = sub.batch
    return Appended(
        batch.session_id, batch.count - skip, skip, batch.last_seq, batch.last_hash, seal.record
    )


async def _judge_and_write(
    conn: Connection, sub: Submission, signer: hashcore.Signer, clock: Callable[[], str]
) -> tuple[Outcome, Head | None]:
    batch = sub.batch
    sid = batch.session_id
    row = await conn.fetchrow(_LOCK_HEAD, SESSION_HEAD, sub.tenant_id, sid, sub.key_id)
    assert row is not None  # the function always returns one row
    key_live, found, *stored_head = row
    if not key_live:
        return KeyRevoked(), None
    head = Head(*stored_head) if found else EMPTY_HEAD
    next_seq, head_hash = head.next_seq, head.head_hash
    if batch.first_seq > next_seq:
        return Conflict(
            "seq_gap",
            next_seq,
            head_hash,
            f"the batch starts at seq {batch.first_seq} but the session continues at "
            f"seq {next_seq}",
        ), head
    if batch.first_seq == next_seq and batch.first_prev_hash != head_hash:
        return Conflict(
            "chain_fork",
            next_seq,
            head_hash,
            f"event 0 (seq {next_seq}) has prev_hash {batch.first_prev_hash} but the "
            f"stored head is {head_hash}",
            index=0,
        ), head
    # Events below next_seq must be retries: the very events already stored.
    overlap = max(min(next_seq, batch.last_seq + 1) - batch.first_seq, 0)
    if overlap:
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
                    f"with that seq (stored hash {stored[i]['hash']}, sent {batch.hashes[i]})",
                    index=i,
                ), head
    if overlap == batch.count:
        seal_record = await conn.fetchval(_COVERING_SEAL, sub.tenant_id, sid, batch.last_seq)
        return Appended(sid, 0, overlap, next_seq - 1, head_hash, bytes(seal_record)), head

    seal = _seal(sub, signer, clock, head, batch.first_seq + overlap)
    status = await conn.fetchval(_APPEND_AT_HEAD, *_write_args(sub, head, seal, overlap))
    # We hold the locks and just read this head: it cannot have moved.
    assert status == "appended", status
    return _appended(sub, seal, overlap), Head(batch.last_seq + 1, batch.last_hash, seal.hash)
