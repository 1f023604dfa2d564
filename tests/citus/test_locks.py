"""Where the session's locks live on a Citus cluster, and that both commit paths
take them at the same place.

The judged path runs several statements in one transaction; its first,
`lock_session_head`, is force-delegated to the worker holding the session, so
its advisory lock and row lock are taken there, inside the worker transaction
that the rest of the judged path (and its `append_packed_at_head`) continues. The fast
path's single `append_packed_at_head` is delegated to that same worker. So a judged
transaction holding its lock, through the coordinator or through another
worker, makes fast-path commits arriving through any node wait on that worker;
the coordinator and the other worker hold no such lock. (A lock taken by a
statement that ran on the coordinator would not be seen by either.)

Then the race of `tests/test_commit_race.py`, across nodes: two commits of one
session sealed against the same head, one through the coordinator and one
through a worker that does not hold the session, released together.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from typing import Any

import pytest
import trio

from service.core.outcomes import Appended, Conflict, Outcome
from service.storage import chains
from service.storage.database import Connection, Database
from service.storage.locks import SESSION_HEAD

from ..chain import ZERO, Chain, relink
from ..support import DirectCommitter, MakeKey, direct_committer
from .conftest import Cluster, advisory_locks, shard_node


@dataclass
class Holder:
    holding: bool = False
    release: bool = False


async def session_held_by(db: Database, port: int) -> str:
    """A new session id whose shard is on the worker at `port`."""

    async def find(conn: Connection) -> str:
        while True:
            sid = str(uuid.uuid4())
            if (await shard_node(conn, sid))[1] == port:
                return sid

    return await db.run(find)


async def race(
    db: Database,
    cluster: Cluster,
    committers: tuple[DirectCommitter, DirectCommitter],
    holder_db: Database,
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
) -> tuple[list[Outcome], int, int]:
    """Hold the judged path's lock on the session through `holder_db`, start
    `first` through committers[0] and `second` through committers[1] (both the
    fast path), check where the locks are, release. Returns the outcomes, the
    records stored and the port of the session's worker."""
    session_id = first[0]["session_id"]
    shard_port = (await db.run(lambda conn: shard_node(conn, session_id)))[1]
    nobody = {n.port: (0, 0) for n in cluster.nodes}
    state = Holder()
    c0 = committers[0]

    async def hold(conn: Connection) -> None:
        live, head = await chains.lock_session_head(conn, c0.tenant_id, session_id, c0.api_key_id)
        assert live and head is None
        state.holding = True
        while not state.release:
            await asyncio.sleep(0.01)

    outcomes: list[Outcome] = []

    async def commit(committer: DirectCommitter, events: list[dict[str, Any]]) -> None:
        outcome, _ = await committer.append(events)
        outcomes.append(outcome)

    async def locks() -> dict[int, tuple[int, int]]:
        return await db.run(lambda conn: advisory_locks(conn, SESSION_HEAD))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder_db.transaction, hold)
            while not state.holding:
                await trio.sleep(0.01)
            # The lock is on the session's worker, and only there.
            assert await locks() == {**nobody, shard_port: (1, 0)}
            nursery.start_soon(commit, committers[0], first)
            nursery.start_soon(commit, committers[1], second)
            # Both fast-path commits wait for it there, whichever node they came in by.
            while (found := await locks()) != {**nobody, shard_port: (1, 2)}:
                assert found[shard_port][0] == 1 and not outcomes, found
                await trio.sleep(0.01)
            state.release = True
    assert await locks() == nobody
    stored = await db.run(
        lambda conn: conn.fetchval("SELECT count(*) FROM records WHERE session_id = $1", session_id)
    )
    return outcomes, int(stored), shard_port


@pytest.fixture
async def committers(
    db: Database, worker_db: Database, make_key: MakeKey
) -> tuple[DirectCommitter, DirectCommitter]:
    """One committer through the coordinator, one through the first worker."""
    c = await direct_committer(db, make_key)
    return c, replace(c, db=worker_db)


@pytest.mark.parametrize("holder_via", ["coordinator", "worker"])
async def test_the_judged_paths_lock_is_on_the_sessions_worker_and_stops_the_fast_path(
    db: Database,
    worker_db: Database,
    cluster: Cluster,
    committers: tuple[DirectCommitter, DirectCommitter],
    holder_via: str,
) -> None:
    # The session lives on the worker we do NOT connect to: the worker-side
    # committer's call is delegated from one worker to the other.
    sid = await session_held_by(db, cluster.workers[1].port)
    events = Chain(session_id=sid).make(3)
    holder_db = db if holder_via == "coordinator" else worker_db
    outcomes, stored, port = await race(db, cluster, committers, holder_db, events, events)
    assert port == cluster.workers[1].port
    appended = [o for o in outcomes if isinstance(o, Appended) and not o.duplicate]
    retried = [o for o in outcomes if isinstance(o, Appended) and o.duplicate]
    assert (len(appended), len(retried)) == (1, 1), outcomes
    assert (retried[0].duplicates, retried[0].seal) == (3, appended[0].seal)
    assert stored == 3 + 1


async def test_two_different_batches_through_two_nodes_append_once_and_one_is_a_fork(
    db: Database, cluster: Cluster, committers: tuple[DirectCommitter, DirectCommitter]
) -> None:
    sid = await session_held_by(db, cluster.workers[1].port)
    ours = Chain(session_id=sid).make(3)
    theirs = relink([{**e, "kind": "other.writer"} for e in ours], ZERO)
    outcomes, stored, _ = await race(db, cluster, committers, db, ours, theirs)
    appended = [o for o in outcomes if isinstance(o, Appended)]
    forks = [o for o in outcomes if isinstance(o, Conflict)]
    assert (len(appended), len(forks)) == (1, 1), outcomes
    fork = forks[0]
    assert (fork.code, fork.index, fork.next_seq) == ("chain_fork", 0, 3)
    assert fork.head_hash == appended[0].head_hash
    assert stored == 3 + 1
