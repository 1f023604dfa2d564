"""The database stops (cleanly, by crash, or by SIGKILL of the postmaster) while a
`serve` process is running and a batch is half-way through its commit.

While it is down, every request that needs it gets 503 `unavailable` with
Retry-After (never 200, never 500) and /readyz is 503. Once it is back, the same
`serve` process recovers by itself, and the stored chain holds only whole
batches: the one that was in flight is absent, and is accepted whole when resent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from service.storage.database import Connection, Database, PoolSettings, open_database
from service.storage.embedded import EmbeddedPostgres

from .chain import Chain, body_of
from .conftest import ServeProcess, spawn_serve
from .support import JSON, assert_unavailable, assert_verifies, assert_whole_batches, cli, stored

BATCH = 10


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Database]:
    async with open_database(PoolSettings(url, max_size=1, deadline=30)) as db:
        yield db


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/ingest", content=body_of(events), headers=JSON)


async def wait_until_sleeping_in_commit(url: str) -> None:
    async def sleeping(conn: Connection) -> bool:
        return bool(
            await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event = 'PgSleep' AND query LIKE '%append_packed_at_head(%'"""
            )
        )

    async with connected(url) as db:
        with trio.fail_after(30):
            while not await db.run(sleeping):
                await trio.sleep(0.02)


def start_again(pg: EmbeddedPostgres) -> None:
    """Start the stopped server; after a SIGKILL its orphaned backends may hold the
    old shared memory for a moment, which makes PostgreSQL refuse to start."""
    for attempt in range(50):
        try:
            pg.start()
            return
        except RuntimeError:
            if attempt == 49:
                raise
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fast", "immediate", "kill"])
async def test_service_rides_out_a_database_restart(tmp_path: Path, how: str) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = await trio.to_thread.run_sync(pg.start)
    try:
        made = await trio.to_thread.run_sync(
            cli, url, "keys", "create", "--tenant", "acme", "--scope", "ingest", "--scope", "read"
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        serve = await trio.to_thread.run_sync(spawn_serve, url, tmp_path / "serve")
        try:
            await scenario(pg, url, serve, token, how)
        finally:
            await trio.to_thread.run_sync(serve.stop)
        assert b'"level":"error"' not in serve.log.read_bytes()
    finally:
        await trio.to_thread.run_sync(pg.destroy)


async def scenario(
    pg: EmbeddedPostgres, url: str, serve: ServeProcess, token: str, how: str
) -> None:
    chain = Chain()
    batches = list(chain.batches(6, BATCH))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=20) as client:
        for batch in batches[:3]:
            resp = await ingest(client, batch)
            assert resp.status_code == 200, resp.text

        # Batch 3 will be half-way through its commit (events, seal and head
        # written, not committed) when the database goes away.
        async with connected(url) as db:
            await db.run(
                lambda conn: conn.execute(
                    f"""CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            IF NEW.session_id = '{chain.session_id}'::uuid THEN
                                PERFORM pg_sleep(600);
                            END IF;
                            RETURN NEW;
                        END $$;
                        CREATE TRIGGER test_stall AFTER UPDATE ON sessions
                        FOR EACH ROW EXECUTE FUNCTION test_stall();"""
                )
            )
        in_flight: list[httpx.Response] = []

        async def send() -> None:
            in_flight.append(await ingest(client, batches[3]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_until_sleeping_in_commit(url)
            if how == "kill":
                pg.kill()
            else:
                await trio.to_thread.run_sync(pg.stop, how)
        assert_unavailable(in_flight[0])

        # Down: stale pooled connections first, then refused connections.
        for _ in range(3):
            assert_unavailable(await ingest(client, batches[3]))
            assert_unavailable(await ingest(client, batches[4]))
            assert_unavailable(await client.get(f"/v1/sessions/{chain.session_id}"))
            assert_unavailable(await client.get("/v1/keys"))
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"

        await trio.to_thread.run_sync(start_again, pg)
        async with connected(url) as db:
            await db.run(lambda conn: conn.execute("DROP TRIGGER test_stall ON sessions"))
            s = await stored(db, chain.session_id)
            assert_whole_batches(s)
            assert s.event_count == 3 * BATCH  # the batch in flight left nothing

        # The same serve process, never restarted, is ready again on its own.
        with trio.fail_after(30):
            while (await client.get("/readyz")).status_code != 200:
                await trio.sleep(0.05)
        for batch in batches[3:]:
            resp = await ingest(client, batch)
            assert resp.status_code == 200, resp.text
            assert resp.json()["accepted"] == BATCH and not resp.json()["duplicate"]

        async with connected(url) as db:
            s = await stored(db, chain.session_id)
        assert_whole_batches(s)
        assert s.event_count == 6 * BATCH
        assert [seal["seq"] for seal in s.seals] == [BATCH * i - 1 for i in range(1, 7)]
        await assert_verifies(client, chain.session_id)
