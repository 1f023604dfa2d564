"""Group commit (core.group_commit, migration 0005): batches of several sessions
that wait at the same time share one statement, and each keeps every guarantee
of a write of its own. The overlaps are made certain, not hoped for: another
transaction holds a session's advisory lock until the writes wait behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from service.core.commit import EMPTY_HEAD, ChainHead, append_args
from service.core.group_commit import GroupCommit, WriteFailed
from service.core.outcomes import Appended, Outcome
from service.runtime import utc_now
from service.storage import chains
from service.storage.database import Connection, Database
from service.storage.queries import AppendArgs

from .chain import ZERO, Chain
from .conftest import Server
from .support import (
    DirectCommitter,
    MakeKey,
    direct_committer,
    holding_session_lock,
    until_session_locks,
)
from .test_operability import metric


async def _stored(db: Database, session_id: str) -> tuple[int, int]:
    """(records, head rows) stored for the session."""
    row = await db.run(
        lambda c: c.fetchrow(
            """SELECT (SELECT count(*) FROM records WHERE session_id = $1),
                      (SELECT count(*) FROM sessions WHERE session_id = $1)""",
            session_id,
        )
    )
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture
async def group(db: Database) -> AsyncIterator[GroupCommit]:
    """One writer: what arrives while it waits is queued, then written as a group."""
    async with trio.open_nursery() as nursery:
        yield GroupCommit(nursery, db, writers=1, max_batches=16, max_bytes=1 << 22)
        nursery.cancel_scope.cancel()


async def _behind_a_held_lock(
    committer: DirectCommitter,
    group: GroupCommit,
    others: list[Chain],
    heads: dict[str, ChainHead | None] | None = None,
) -> dict[str, Outcome | Exception]:
    """Commit 3 events of a new session through `group` while its lock is held,
    so that the lone writer waits; then 3 events of each of `others`, which
    queue meanwhile; then release the lock. Returns each session's outcome (and
    fills `heads` with the heads they left)."""
    heads = {} if heads is None else heads
    db = committer.db
    blocked = Chain()
    results: dict[str, Outcome | Exception] = {}

    async def commit(chain: Chain) -> None:
        try:
            results[chain.session_id], heads[chain.session_id] = await committer.append(
                chain.make(3), group=group
            )
        except Exception as exc:
            results[chain.session_id] = exc

    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            holding_session_lock(db, committer.tenant_id, blocked.session_id),
        ):
            nursery.start_soon(commit, blocked)
            await until_session_locks(db, 1, 1)  # the writer waits behind us
            for chain in others:
                nursery.start_soon(commit, chain)
            while group.statistics()["queued"] < len(others):
                await trio.sleep(0.01)
            assert group.statistics()["groups"] == 0
    blocked_outcome = results.pop(blocked.session_id)
    assert isinstance(blocked_outcome, Appended), blocked_outcome
    return results


async def test_batches_that_wait_together_share_one_statement(
    db: Database, make_key: MakeKey, group: GroupCommit
) -> None:
    committer = await direct_committer(db, make_key)
    others = [Chain() for _ in range(3)]
    heads: dict[str, ChainHead | None] = {}
    results = await _behind_a_held_lock(committer, group, others, heads)
    assert group.statistics() == {"queued": 0, "groups": 1, "grouped_batches": 3, "largest": 3}
    for chain in others:
        outcome = results[chain.session_id]
        assert isinstance(outcome, Appended), outcome
        assert (outcome.accepted, outcome.head_seq) == (3, 2)
        assert await _stored(db, chain.session_id) == (3 + 1, 1)
    # The heads the group left are the ones the next batches continue, on the
    # fast path again.
    for chain in others:
        outcome, _ = await committer.append(
            chain.make(2), known=heads[chain.session_id], group=group
        )
        assert isinstance(outcome, Appended) and outcome.head_seq == 4, outcome
    assert group.statistics()["grouped_batches"] == 3


async def test_a_batch_that_fails_in_a_group_writes_nothing_and_fails_nothing_else(
    db: Database, make_key: MakeKey, group: GroupCommit
) -> None:
    committer = await direct_committer(db, make_key)
    good, bad, also_good = Chain(), Chain(), Chain()
    refuse = f"""
        CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; END $$;
        CREATE TRIGGER test_refuse BEFORE INSERT ON records FOR EACH ROW
            WHEN (NEW.session_id = '{bad.session_id}' AND NEW.is_seal)
            EXECUTE FUNCTION test_refuse();"""
    await db.run(lambda c: c.execute(refuse))
    try:
        results = await _behind_a_held_lock(committer, group, [good, bad, also_good])
    finally:
        await db.run(lambda c: c.execute("DROP TRIGGER test_refuse ON records"))
        await db.run(lambda c: c.execute("DROP FUNCTION test_refuse()"))
    assert group.statistics()["largest"] == 3
    failure = results[bad.session_id]
    assert isinstance(failure, WriteFailed) and "23514" in str(failure), failure
    # Its events were inserted before its seal was refused: all of it is undone.
    assert await _stored(db, bad.session_id) == (0, 0)
    for chain in (good, also_good):
        assert isinstance(results[chain.session_id], Appended), results
        assert await _stored(db, chain.session_id) == (3 + 1, 1)


async def test_groups_lock_their_sessions_in_one_order_whatever_the_order_given(
    db: Database, make_key: MakeKey
) -> None:
    """Two groups of the same two sessions, given in opposite orders, while a third
    transaction holds the lock that comes second. Locked in the order given, they
    would each hold one session and wait for the other's (a deadlock, which
    PostgreSQL breaks after a second by failing one)."""
    committer = await direct_committer(db, make_key)

    async def fresh(chain: Chain) -> tuple[tuple[int, str], AppendArgs]:
        """The write of a new session's first batch, and its place in the lock order."""
        sub = committer.submission(chain.make(2))
        b = sub.batch
        seal = committer.signer.seal(b.session_id, b.last_seq, 0, ZERO, b.last_hash, utc_now())

        async def lock_id(conn: Connection) -> int:
            query = "SELECT hashtext($1::bigint::text || '/' || $2::text)"
            return int(await conn.fetchval(query, committer.tenant_id, b.session_id))

        return (await db.run(lock_id), b.session_id), append_args(sub, EMPTY_HEAD, seal, 0)

    writes = dict([await fresh(Chain()), await fresh(Chain())])
    first, second = (writes[k] for k in sorted(writes))
    statuses: dict[str, list[str]] = {}

    async def write(name: str, group: list[AppendArgs]) -> None:
        statuses[name] = await db.run(lambda c: chains.append_group(c, group))

    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            holding_session_lock(db, committer.tenant_id, second.session_id),
        ):
            nursery.start_soon(write, "reversed", [second, first])
            await until_session_locks(db, 2, 1)  # it holds `first`, waits for `second`
            nursery.start_soon(write, "in order", [first, second])
            await until_session_locks(db, 2, 2)  # it waits for `first`
    assert statuses == {"reversed": ["appended", "appended"], "in order": ["moved", "moved"]}
    for w in (first, second):
        assert await _stored(db, w.session_id) == (2 + 1, 1)


async def test_with_grouping_off_a_blocked_write_holds_up_no_other_session(
    db: Database, make_key: MakeKey
) -> None:
    """`max_batches` 1 (what a Citus cluster gets): each batch on a connection of
    its own, not queued behind the writers, so one waiting on a lock does not
    hold up other sessions' batches."""
    committer = await direct_committer(db, make_key)
    blocked, free = Chain(), Chain()
    outcomes: dict[str, Outcome] = {}

    async def commit(chain: Chain) -> None:
        outcomes[chain.session_id], _ = await committer.append(chain.make(2), group=ungrouped)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ungrouped = GroupCommit(nursery, db, writers=1, max_batches=1, max_bytes=1 << 22)
            async with holding_session_lock(db, committer.tenant_id, blocked.session_id):
                nursery.start_soon(commit, blocked)
                await until_session_locks(db, 1, 1)  # it waits behind us
                await commit(free)  # would wait behind it, on the one writer
                assert blocked.session_id not in outcomes
            while blocked.session_id not in outcomes:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert all(isinstance(o, Appended) for o in outcomes.values()), outcomes
    assert ungrouped.statistics()["groups"] == 0


async def test_the_groups_a_worker_wrote_are_counted_in_its_metrics(
    server: Server, make_key: MakeKey
) -> None:
    """/metrics adds what the worker's group commit counted since the last scrape."""
    key = await make_key("acme", "ingest", "read")
    group = server.runtime.group
    async with server.client(key) as client:
        group.groups, group.grouped = 3, 11
        text = (await client.get("/metrics")).text
        assert metric(text, "chain_commit_groups_total") == 3
        assert metric(text, "chain_commit_group_batches_total") == 11
        group.groups, group.grouped = 5, 20
        text = (await client.get("/metrics")).text
        assert metric(text, "chain_commit_groups_total") == 5
        assert metric(text, "chain_commit_group_batches_total") == 20
