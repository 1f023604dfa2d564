"""PROTOCOL §3 step 5: events, seal and head are written in one transaction.

Faults are injected *inside* that transaction, after the events were inserted,
by test-only triggers on the real tables: an error raised by PostgreSQL, and the
connection killed by `pg_terminate_backend` while the transaction is open.
Either way the client must not be told "stored", and nothing of the batch may
remain; once the fault is gone the same batch is accepted and the chain verifies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio

from service.config import Settings
from service.storage.database import Connection, Database

from .chain import Chain, body_of
from .conftest import Server, start_server
from .support import (
    JSON,
    MakeKey,
    assert_problem,
    assert_unavailable,
    assert_verifies,
    assert_whole_batches,
    stored,
)

# Three places after the events are inserted, all inside the commit's transaction:
# the seal row (inserted by the same statement, after the events), after the
# statement's rows are all in (AFTER ROW triggers run at the end of the
# statement), and the head row's write (insert or update) that follows.
FAULTS = {
    "before_insert_seal": "BEFORE INSERT ON records FOR EACH ROW WHEN (NEW.is_seal)",
    "after_insert_seal": "AFTER INSERT ON records FOR EACH ROW WHEN (NEW.is_seal)",
    "after_write_head": "AFTER INSERT OR UPDATE ON sessions FOR EACH ROW",
}


@asynccontextmanager
async def trigger(db: Database, timing: str, session_id: str, action: str) -> AsyncIterator[None]:
    """A test-only trigger that runs `action` (PL/pgSQL) for rows of one session."""
    table = timing.split(" ON ")[1].split()[0]

    async def create(conn: Connection) -> None:
        await conn.execute(
            f"""CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.session_id = '{session_id}'::uuid THEN {action} END IF;
                    RETURN NEW;
                END $$"""
        )
        await conn.execute(f"CREATE TRIGGER test_fault {timing} EXECUTE FUNCTION test_fault()")

    async def drop(conn: Connection) -> None:
        await conn.execute(f"DROP TRIGGER IF EXISTS test_fault ON {table}")
        await conn.execute("DROP FUNCTION IF EXISTS test_fault()")

    await db.transaction(create)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await db.transaction(drop)


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/ingest", content=body_of(events), headers=JSON)


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("first_batch", [True, False], ids=["new_session", "existing_session"])
async def test_error_inside_the_commit_stores_nothing(
    db: Database, server: Server, make_key: MakeKey, fault: str, first_batch: bool
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        if not first_batch:
            resp = await ingest(client, chain.make(10))
            assert resp.status_code == 200, resp.text
        before = await stored(db, chain.session_id)
        batch = chain.make(25)

        async with trigger(db, FAULTS[fault], chain.session_id, "RAISE 'injected fault';"):
            resp = await ingest(client, batch)
            # A server-side fault is not the client's doing and not an outage:
            # 500, and the body says nothing was stored.
            body = assert_problem(resp, 500, "internal")
            assert "nothing was stored" in body["detail"]
            assert "retry-after" not in resp.headers
            after = await stored(db, chain.session_id)
            assert after == before  # no event, no seal, no session row, same head
            if first_batch:
                assert after.head is None and after.event_count == 0
            else:
                assert after.event_count == 10

        # The fault is gone: the very batch the client was refused now goes in whole.
        resp = await ingest(client, batch)
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 25 and resp.json()["duplicates"] == 0
        resp = await ingest(client, chain.make(5))
        assert resp.status_code == 200, resp.text
        final = await stored(db, chain.session_id)
        assert_whole_batches(final)
        assert final.event_count == len(chain.events)
        assert [final.events[e["seq"]] for e in chain.events] == [e["hash"] for e in chain.events]
        await assert_verifies(client, chain.session_id)


async def _terminate_when_sleeping(db: Database, session_id: str) -> int:
    """Wait for the commit to sleep in the trigger, then kill its backend; its pid."""

    async def find(conn: Connection) -> list[int]:
        rows = await conn.fetch(
            """SELECT pid FROM pg_stat_activity
               WHERE state = 'active' AND wait_event = 'PgSleep'
                 AND query LIKE '%append_packed_at_head(%' AND pid <> pg_backend_pid()"""
        )
        return [r["pid"] for r in rows]

    async def terminate(conn: Connection, pid: int) -> bool:
        return bool(await conn.fetchval("SELECT pg_terminate_backend($1)", pid))

    with trio.fail_after(30):
        while not (pids := await db.run(find)):
            await trio.sleep(0.02)
    assert len(pids) == 1, pids
    # The rows are in, uncommitted, in the transaction we are about to kill.
    assert await db.run(lambda conn: terminate(conn, pids[0]))
    return pids[0]


@pytest.mark.parametrize("fault", ["after_insert_seal", "after_write_head"])
async def test_connection_killed_inside_the_commit_stores_nothing(
    db: Database,
    settings: Settings,
    make_key: MakeKey,
    nursery: trio.Nursery,
    fault: str,
) -> None:
    # A deadline far above the test's own: the 503 can only come from the kill.
    server = await start_server(nursery, replace(settings, db_deadline=120.0))
    chain = Chain()
    async with server.client(await make_key()) as client:
        assert (await ingest(client, chain.make(10))).status_code == 200
        before = await stored(db, chain.session_id)
        batch = chain.make(40)

        async with trigger(db, FAULTS[fault], chain.session_id, "PERFORM pg_sleep(600);"):
            responses: list[httpx.Response] = []
            killed: list[int] = []

            async def send() -> None:
                responses.append(await ingest(client, batch))

            async def kill() -> None:
                killed.append(await _terminate_when_sleeping(db, chain.session_id))

            async with trio.open_nursery() as inner:
                inner.start_soon(send)
                inner.start_soon(kill)

            assert killed
            body = assert_unavailable(responses[0])
            assert "send the batch again" in body["detail"]
            assert await stored(db, chain.session_id) == before

        # The pool replaced the dead connection by itself: the retry goes in whole.
        resp = await ingest(client, batch)
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 40
        resp = await ingest(client, chain.make(3))
        assert resp.status_code == 200, resp.text
        final = await stored(db, chain.session_id)
        assert_whole_batches(final)
        assert final.event_count == 53
        await assert_verifies(client, chain.session_id)
