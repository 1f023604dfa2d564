"""Two commits against one head, made to overlap for certain (parsec's style):
a transaction holds the session's advisory lock until both commits wait on it.

Both take the fast path (each believes the chain is empty), so both sealed
against the same head. Exactly one appends; the other finds the head moved,
writes nothing, and is judged afresh under the lock: a retry if it is the same
batch, a fork if it is another.
"""

from __future__ import annotations

from typing import Any

import trio

from service.core.outcomes import Appended, Conflict, Outcome
from service.storage.database import Database

from .chain import ZERO, Chain, relink
from .support import (
    MakeKey,
    direct_committer,
    holding_session_lock,
    session_locks,
    until_session_locks,
)


async def race(
    db: Database, make_key: MakeKey, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> tuple[list[Outcome], int]:
    """Commit `first` and `second` to the same session at once; returns their
    outcomes and the number of `records` rows stored afterwards."""
    committer = await direct_committer(db, make_key)
    session_id = first[0]["session_id"]

    outcomes: list[Outcome] = []

    async def commit(events: list[dict[str, Any]]) -> None:
        outcome, _ = await committer.append(events)
        outcomes.append(outcome)

    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            holding_session_lock(db, committer.tenant_id, session_id),
        ):
            nursery.start_soon(commit, first)
            nursery.start_soon(commit, second)
            # Both commits wait behind us: ending the block releases them together.
            await until_session_locks(db, 1, 2)
    stored = await db.run(
        lambda conn: conn.fetchval("SELECT count(*) FROM records WHERE session_id = $1", session_id)
    )
    assert await session_locks(db) == (0, 0)
    return outcomes, int(stored)


async def test_the_same_batch_twice_appends_once_and_the_other_is_a_judged_retry(
    db: Database, make_key: MakeKey
) -> None:
    events = Chain().make(3)
    outcomes, stored = await race(db, make_key, events, events)
    appended = [o for o in outcomes if isinstance(o, Appended) and not o.duplicate]
    retried = [o for o in outcomes if isinstance(o, Appended) and o.duplicate]
    assert (len(appended), len(retried)) == (1, 1), outcomes
    # A retry is only recognised by the judged path: it read the stored events.
    assert (retried[0].duplicates, retried[0].seal) == (3, appended[0].seal)
    assert stored == 3 + 1


async def test_two_different_batches_append_once_and_the_other_is_a_judged_fork(
    db: Database, make_key: MakeKey
) -> None:
    ours = Chain().make(3)
    theirs = relink([{**e, "kind": "other.writer"} for e in ours], ZERO)
    outcomes, stored = await race(db, make_key, ours, theirs)
    appended = [o for o in outcomes if isinstance(o, Appended)]
    forks = [o for o in outcomes if isinstance(o, Conflict)]
    assert (len(appended), len(forks)) == (1, 1), outcomes
    assert appended[0].accepted == 3
    # The fast path can only say 'moved': a fork with the stored head's figures
    # comes from judging the batch against the head under the lock.
    fork = forks[0]
    assert (fork.code, fork.index, fork.next_seq) == ("chain_fork", 0, 3)
    assert fork.head_hash == appended[0].head_hash
    assert stored == 3 + 1
