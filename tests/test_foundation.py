"""The foundation: the trio-asyncio bridge under cancellation, migrations, probes."""

from __future__ import annotations

import secrets
import socket

import asyncpg
import pytest
import trio

from service.storage import migrations
from service.storage.database import (
    Connection,
    Database,
    DatabaseUnavailable,
    PoolSettings,
    open_database,
    with_database,
)

from .conftest import Server, with_dbname
from .support import python

LOCK_NS = 4242  # an advisory-lock namespace no service code uses


async def _held_locks(db: Database) -> int:
    async def work(conn: Connection) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
                LOCK_NS,
            )
        )

    return await db.run(work)


async def _stuck_sessions(db: Database) -> list[str]:
    """Other backends of this database that sit in a transaction or run our sleep."""

    async def work(conn: Connection) -> list[str]:
        rows = await conn.fetch(
            """SELECT state, query FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND (state LIKE 'idle in transaction%' OR query LIKE '%pg_sleep%')"""
        )
        return [f"{r['state']}: {r['query']}" for r in rows]

    return await db.run(work)


async def _backend_pid(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def _sleep_holding_lock(conn: Connection) -> None:
    await conn.execute("INSERT INTO tenants (name) VALUES ('cancelled')")
    await conn.execute("SELECT pg_advisory_xact_lock($1, 1)", LOCK_NS)
    await conn.execute("SELECT pg_sleep(30)")


async def _assert_clean(db: Database) -> None:
    # The cancelled backend may take a moment to notice the cancel request.
    with trio.fail_after(10):
        while await _stuck_sessions(db) or await _held_locks(db):
            await trio.sleep(0.05)
    assert await db.run(lambda c: c.fetchval("SELECT count(*) FROM tenants")) == 0
    assert db.statistics()["in_use"] == 0


async def test_cancelled_unit_of_work_rolls_back_and_releases(db: Database) -> None:
    with trio.move_on_after(0.5) as scope:
        await db.transaction(_sleep_holding_lock)
    assert scope.cancelled_caught
    await _assert_clean(db)
    # The pool is still usable and the lock is free for anyone.
    await db.transaction(lambda c: c.execute("SELECT pg_advisory_xact_lock($1, 1)", LOCK_NS))


async def test_deadline_becomes_unavailable_and_leaves_nothing(db: Database) -> None:
    with pytest.raises(DatabaseUnavailable, match="exceeded"):
        await db.transaction(_sleep_holding_lock, deadline=0.5)
    await _assert_clean(db)


async def test_many_cancellations_do_not_leak_connections(db: Database) -> None:
    async def one(delay: float) -> None:
        with trio.move_on_after(delay):
            await db.transaction(_sleep_holding_lock)

    async with trio.open_nursery() as nursery:
        for i in range(12):  # more than the pool holds: some are cancelled while queued
            nursery.start_soon(one, 0.2 + i * 0.03)
    await _assert_clean(db)
    assert db.statistics()["waiting"] == 0


async def test_a_connection_that_lost_its_protocol_state_is_unavailable_and_dropped(
    db: Database,
) -> None:
    """A backend that died while its connection sat idle in the pool makes asyncpg's
    next query fail with InternalClientError ('cannot switch to state ...'): found
    by the fault soak as a 500. It is a 503, and that connection is not reused."""
    pids: list[int] = []

    async def confused(conn: Connection) -> None:
        pids.append(await _backend_pid(conn))
        raise asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )

    async def alive(conn: Connection) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = any($1::int[])"
        return int(await conn.fetchval(query, pids))

    for run in (db.run, db.transaction):
        with pytest.raises(DatabaseUnavailable, match="InternalClientError"):
            await run(confused)
    with trio.fail_after(10):
        while await db.run(alive):
            await trio.sleep(0.05)
    assert db.statistics()["in_use"] == 0


async def test_commit_returns_what_the_work_returned(db: Database) -> None:
    async def work(conn: Connection) -> int:
        return int(await conn.fetchval("INSERT INTO tenants (name) VALUES ('t1') RETURNING id"))

    tenant_id = await db.transaction(work)
    assert await db.run(lambda c: c.fetchval("SELECT id FROM tenants WHERE name = 't1'")) == (
        tenant_id
    )


async def test_unreachable_database_is_unavailable() -> None:
    settings = PoolSettings("postgresql://postgres@/postgres?host=/nonexistent-dir", deadline=5)
    async with open_database(settings) as db:
        with pytest.raises(DatabaseUnavailable):
            await db.run(lambda c: c.fetchval("SELECT 1"))


async def test_a_unix_socket_connection_sends_a_large_statement_at_once(db: Database) -> None:
    """A group commit's statement (hundreds of KiB) fits the connection's send
    buffer: it leaves in one send instead of one per 8 KiB the backend reads."""
    wmem_max = int(await trio.Path("/proc/sys/net/core/wmem_max").read_text())

    async def work(conn: Connection) -> tuple[int, int, int]:
        sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
        if sock.family != socket.AF_UNIX:
            pytest.skip("TCP sizes its own send buffers")
        big = secrets.token_bytes(3 << 20)
        stored = await conn.fetchval("SELECT length($1::bytea)", big)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), stored, len(big)

    sndbuf, stored, sent = await db.run(work)
    assert stored == sent
    # The kernel doubles what it is asked for (bookkeeping), up to wmem_max.
    assert sndbuf >= 2 * min(4 << 20, wmem_max)


async def test_a_kept_connection_is_one_backend_held_against_the_pool(db: Database) -> None:
    """A group-commit writer keeps its connection between writes: every unit of
    work on it runs on the same backend, and the place it holds in the pool is
    not handed to anyone else meanwhile (not even between two of its writes)."""
    async with db.owned() as kept:
        assert db.statistics()["kept"] == 0  # taken at its first use
        pids = {await kept.run(_backend_pid) for _ in range(5)}
        assert len(pids) == 1
        assert db.statistics() | {"waits_total": 0} == {
            "in_use": 0,
            "kept": 1,
            "waiting": 0,
            "waits_total": 0,
        }

        # The pool's own units of work never get the kept connection, and can
        # use every other place: 3 at once of a pool of 4.
        async def pooled(conn: Connection) -> int:
            pid = await _backend_pid(conn)
            await conn.execute("SELECT pg_sleep(0.2)")
            return pid

        others: list[int] = []

        async def one() -> None:
            others.append(await db.run(pooled))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
            await trio.sleep(0.1)
            assert db.statistics()["in_use"] == 3
            assert db.statistics()["waiting"] == 0
        assert not pids & set(others)
        assert len(set(others)) == 3
    assert db.statistics()["kept"] == 0
    assert db.statistics()["in_use"] == 0


async def test_a_kept_connection_lost_while_idle_is_replaced_unnoticed(db: Database) -> None:
    """A kept connection whose backend died between two writes (terminated, the
    server restarted) is replaced at the next write; that write succeeds."""
    async with db.owned() as kept:
        first = await kept.run(_backend_pid)
        assert await db.run(lambda c: c.fetchval("SELECT pg_terminate_backend($1)", first))

        async def gone(conn: Connection) -> bool:
            query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
            return bool(await conn.fetchval(query, first))

        with trio.fail_after(10):
            while not await db.run(gone):
                await trio.sleep(0.05)
        await trio.sleep(0.1)  # the client side reads the backend's goodbye
        second = await kept.run(_backend_pid)
        assert second != first
        assert db.statistics()["kept"] == 1
    assert db.statistics()["kept"] == 0


async def test_a_kept_connection_cut_off_mid_statement_is_given_back(db: Database) -> None:
    """A deadline or a cancellation in the middle of a statement on a kept
    connection leaves no statement running, no transaction open and no place
    held; the next unit of work takes a fresh connection."""

    async def sleep_in_transaction(conn: Connection) -> None:
        async with conn.transaction():
            await _sleep_holding_lock(conn)

    async with db.owned() as kept:
        before = await kept.run(_backend_pid)
        with pytest.raises(DatabaseUnavailable, match="exceeded"):
            await kept.run(sleep_in_transaction, deadline=0.5)
        assert db.statistics()["kept"] == 0
        await _assert_clean(db)
        with trio.move_on_after(0.5) as scope:
            await kept.run(sleep_in_transaction)
        assert scope.cancelled_caught
        assert db.statistics()["kept"] == 0
        await _assert_clean(db)
        after = await kept.run(_backend_pid)
        assert db.statistics()["kept"] == 1
    assert db.statistics()["kept"] == 0
    assert isinstance(before, int) and isinstance(after, int)


async def test_a_task_cancelled_while_keeping_a_connection_gives_it_back(db: Database) -> None:
    async def writer(task_status: trio.TaskStatus[None]) -> None:
        async with db.owned() as kept:
            await kept.run(_backend_pid)
            task_status.started()
            await kept.run(lambda c: c.execute("SELECT pg_sleep(30)"))

    async with trio.open_nursery() as nursery:
        await nursery.start(writer)
        assert db.statistics()["kept"] == 1
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert db.statistics()["kept"] == 0
    await _assert_clean(db)


_REPORT_TO_ASYNCIO = """
import asyncio, sys
import trio
from service.storage.database import PoolSettings, open_database

async def report(conn):
    asyncio.get_running_loop().call_exception_handler({"message": sys.argv[2]})
    return await conn.fetchval("SELECT 1")

async def main():
    async with open_database(PoolSettings(sys.argv[1], max_size=2)) as db:
        first = await db.run(report)
        await trio.sleep(0.2)  # where the raised report would cancel this block
        print("answered", first, await db.run(lambda c: c.fetchval("SELECT 2")))

trio.run(main)
"""


def test_an_error_reported_to_asyncio_is_logged_not_fatal(database_url: str) -> None:
    """asyncpg reports some conditions through asyncio's exception handler (e.g.
    "Resetting connection with an active transaction" when a pool connection
    comes back from an interrupted unit of work). trio-asyncio's default handler
    raised it in the loop's nursery: the loop stopped, and every unit of work
    then waited forever for it. The fault soak's database freeze left a worker
    whose session actors were dead (500 for their sessions) and whose /readyz
    never answered. It is a log line now, as on asyncio. (In a process of its
    own: before the fix this hung, past any trio deadline.)"""
    message = "Resetting connection with an active transaction <a test's report>"
    run = python("-c", _REPORT_TO_ASYNCIO, database_url, message)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["answered", "1", "2"]
    assert f"asyncio: {message}" in run.stderr  # logged (a warning: nothing failed)


# ---- migrations ------------------------------------------------------------------


@pytest.fixture
def scratch_url(pg_server: str) -> object:
    name = f"scratch_{secrets.token_hex(4)}"
    with_database(pg_server, lambda db: db.run(lambda c: c.execute(f'CREATE DATABASE "{name}"')))
    yield with_dbname(pg_server, name)
    with_database(
        pg_server, lambda db: db.run(lambda c: c.execute(f'DROP DATABASE "{name}" WITH (FORCE)'))
    )


async def test_migrations_apply_in_order_once_even_when_raced(scratch_url: str) -> None:
    results: list[list[migrations.Migration]] = []
    async with open_database(PoolSettings(scratch_url)) as db:
        assert await migrations.pending(db) == [m.version for m in migrations.available()]

        async def migrate() -> None:
            results.append(await migrations.migrate(db))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(migrate)
        rows = await db.run(lambda c: c.fetch("SELECT version, name FROM schema_migrations"))
        assert await migrations.pending(db) == []
        assert await migrations.migrate(db) == []

    expected = [(m.version, m.name) for m in migrations.available()]
    assert sorted((r["version"], r["name"]) for r in rows) == expected
    # Exactly one of the racers applied each migration.
    applied = sorted(m.version for run in results for m in run)
    assert applied == [v for v, _ in expected]


# ---- probes and documents -----------------------------------------------------------


async def test_probes(server: Server) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["seal_key"] == server.runtime.signer.key_id
        assert ready.headers["X-Request-Id"]


async def test_openapi_describes_every_route_and_error(server: Server) -> None:
    async with server.client() as client:
        spec = (await client.get("/openapi.json")).json()
    app_routes = {
        "/v1/ingest",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/records",
        "/v1/sessions/{session_id}/verify",
        "/v1/keys",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    assert set(spec["paths"]) == app_routes
    ingest = spec["paths"]["/v1/ingest"]["post"]["responses"]
    assert set(ingest) == {
        *("200", "400", "401", "403", "408", "409", "413", "415", "429", "431", "501", "503")
    }
    codes = set(spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {"hash_mismatch", "seq_gap", "chain_fork", "overloaded", "unavailable"} <= codes


async def test_unknown_route_is_a_problem(server: Server) -> None:
    async with server.client() as client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
