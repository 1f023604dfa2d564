"""The commit of a verified batch: its judgement and its write (PROTOCOL §3 steps 4–5, §4).

Two paths, one write (`chains.append_at_head`, migrations 0002 and 0004):
- fast: the session's actor remembers the head its last commit left. A batch
  that continues it is sealed against that head and written by ONE statement,
  its own transaction, which re-checks the head under the advisory lock and the
  row lock, and writes nothing if another writer moved it. With a
  `GroupCommit`, batches of several sessions that wait at the same time share
  one such statement (`core.group_commit`);
- judged: otherwise (or when the head moved), one transaction takes the locks,
  reads the head, judges the batch against it (append, retries, 409 `seq_gap` /
  `chain_fork`) and writes.
Either way, one crossing of the bridge per attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import hashcore

from ..storage import chains, queries
from ..storage.database import Connection, Database
from .group_commit import GroupCommit, write_alone
from .outcomes import ZERO_HASH, Appended, Conflict, KeyRevoked, Outcome

Clock = Callable[[], str]
"""Server time for seals: RFC 3339 UTC with microseconds."""


@dataclass(frozen=True)
class ChainHead:
    """What a commit needs of a session's head: where the chain continues, the
    hash it continues from, and the hash of the last seal (the next seal's
    `prev_seal`). (`storage.sessions.SessionHead` is the read side's fuller view.)"""

    next_seq: int
    head_hash: str
    last_seal_hash: str


EMPTY_HEAD = ChainHead(0, ZERO_HASH, ZERO_HASH)


@dataclass(frozen=True)
class Submission:
    """A verified batch, and who sent it."""

    tenant_id: int
    api_key_id: str
    batch: hashcore.Batch


async def append_batch(
    db: Database,
    sub: Submission,
    signer: hashcore.Signer,
    clock: Clock,
    known: ChainHead | None = None,
    group: GroupCommit | None = None,
) -> tuple[Outcome, ChainHead | None]:
    """Commit `sub`; `known` is the head this process last left (None: unknown).
    A fast-path write goes through `group` when given, else alone.

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
        write = append_args(sub, expected, seal, 0)
        status = await (group.append(write) if group is not None else write_alone(db, write))
        if status == "appended":
            return _appended(sub, seal, 0), _head_after(sub, seal)
        if status == "revoked":
            return KeyRevoked(), None
        # 'moved': another writer got there first; judge the batch under the lock.
    return await db.transaction(lambda conn: judge_and_write(conn, sub, signer, clock))


async def judge_and_write(
    conn: Connection, sub: Submission, signer: hashcore.Signer, clock: Clock
) -> tuple[Outcome, ChainHead | None]:
    """Judge `sub` against the stored head under the session's locks, and write
    what it appends. Runs inside a transaction (the locks last until it ends)."""
    batch = sub.batch
    sid = batch.session_id
    api_key_live, stored = await chains.lock_session_head(conn, sub.tenant_id, sid, sub.api_key_id)
    if not api_key_live:
        return KeyRevoked(), None
    head = (
        EMPTY_HEAD
        if stored is None
        else ChainHead(stored.next_seq, stored.head_hash, stored.last_seal_hash)
    )
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
        stored_hashes = await chains.stored_hashes(
            conn, sub.tenant_id, sid, batch.first_seq, batch.first_seq + overlap
        )
        sent = batch.hashes
        for i in range(overlap):
            if stored_hashes[i] != sent[i]:
                return Conflict(
                    "chain_fork",
                    next_seq,
                    head_hash,
                    f"event {i} (seq {batch.first_seq + i}) differs from the stored event "
                    f"with that seq (stored hash {stored_hashes[i]}, sent {sent[i]})",
                    index=i,
                ), head
    if overlap == batch.count:
        seal_record = await chains.covering_seal(conn, sub.tenant_id, sid, batch.last_seq)
        return Appended(sid, 0, overlap, next_seq - 1, head_hash, seal_record), head

    seal = _seal(sub, signer, clock, head, batch.first_seq + overlap)
    status = await chains.append_at_head(conn, append_args(sub, head, seal, overlap))
    # We hold the locks and just read this head: it cannot have moved.
    assert status == "appended", status
    return _appended(sub, seal, overlap), _head_after(sub, seal)


def _seal(
    sub: Submission, signer: hashcore.Signer, clock: Clock, head: ChainHead, first_new: int
) -> hashcore.Seal:
    batch = sub.batch
    return signer.seal(
        batch.session_id, batch.last_seq, first_new, head.last_seal_hash, batch.last_hash, clock()
    )


def append_args(
    sub: Submission, head: ChainHead, seal: hashcore.Seal, skip: int
) -> queries.AppendArgs:
    """The write of the batch's events from index `skip` on, and `seal`, at `head`."""
    batch = sub.batch
    new = slice(skip, batch.count)
    rows = queries.pack_rows(
        batch.first_seq + skip,
        batch.kinds[new],
        batch.ts[new],
        batch.hashes[new],
        batch.records[new],
        (seal.ts, seal.hash, seal.record),
    )
    return chains.append_args(
        sub.tenant_id,
        batch.session_id,
        sub.api_key_id,
        (head.next_seq, head.head_hash, head.last_seal_hash),
        rows,
        batch.last_hash,
        first_ts=batch.ts[0] if batch.first_seq == 0 else None,
        last_ts=batch.ts[-1],
    )


def _head_after(sub: Submission, seal: hashcore.Seal) -> ChainHead:
    return ChainHead(sub.batch.last_seq + 1, sub.batch.last_hash, seal.hash)


def _appended(sub: Submission, seal: hashcore.Seal, skip: int) -> Appended:
    batch = sub.batch
    return Appended(
        batch.session_id, batch.count - skip, skip, batch.last_seq, batch.last_hash, seal.record
    )
