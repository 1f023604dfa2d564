"""Fixtures of the tests that only mean something on a Citus cluster: they are
skipped unless DATABASE_URL is a Citus coordinator's (`make cluster`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from service.storage import citus
from service.storage.database import Connection, Database, PoolSettings, open_database

_LOCKS = """SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted)
            FROM pg_locks
            WHERE locktype = 'advisory' AND classid = {ns} AND objsubid = 2
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


@dataclass(frozen=True)
class Cluster:
    """The test database's cluster: its coordinator's URL and its nodes."""

    url: str
    nodes: list[citus.Node]

    @property
    def workers(self) -> list[citus.Node]:
        return [n for n in self.nodes if n.role == "worker"]

    def url_of(self, node: citus.Node) -> str:
        return citus.node_url(self.url, node)


@pytest.fixture(scope="session")
def cluster(database_url: str) -> Cluster:
    nodes = citus.cluster_nodes(database_url)
    if not nodes:
        pytest.skip("DATABASE_URL is not a Citus coordinator (see `make cluster`)")
    assert len([n for n in nodes if n.role == "worker"]) >= 2, nodes
    return Cluster(database_url, nodes)


async def shard_node(conn: Connection, session_id: str) -> tuple[str, int]:
    """(host, port) of the worker holding the shard of `session_id`."""
    row = await conn.fetchrow(
        """SELECT nodename, nodeport FROM pg_dist_shard_placement
           WHERE shardid = get_shard_id_for_distribution_column('sessions', $1::uuid)""",
        session_id,
    )
    assert row is not None
    return str(row[0]), int(row[1])


async def advisory_locks(conn: Connection, ns: int) -> dict[int, tuple[int, int]]:
    """Per node port: (held, awaited) advisory locks of namespace `ns` in the test
    database, read on the coordinator and, through it, on every worker."""
    query = _LOCKS.format(ns=int(ns))
    here = await conn.fetchrow(query)
    assert here is not None
    port = int(await conn.fetchval("SELECT current_setting('port')"))
    found = {port: (int(here[0]), int(here[1]))}
    rows = await conn.fetch(
        "SELECT nodeport, success, result FROM run_command_on_workers($1)",
        f"SELECT row(q.*)::text FROM ({query}) q",
    )
    for row in rows:
        assert row["success"], row["result"]
        held, awaited = row["result"].strip("()").split(",")
        found[int(row["nodeport"])] = (int(held), int(awaited))
    return found


@pytest.fixture
async def worker_db(db: Database, cluster: Cluster) -> AsyncIterator[Database]:
    """The test database through the first worker (not through the coordinator)."""
    async with open_database(PoolSettings(cluster.url_of(cluster.workers[0]), max_size=4)) as wdb:
        yield wdb
