"""Citus (distributed PostgreSQL): what the rest of the code needs to know of it.

Migration 0003 distributes the schema when the `citus` extension is installed in
the database. A Citus cluster keeps its metadata per database, so a new database
(the tests make one per run, the benchmark one per run) needs the database, the
extension and the node list on every node: `create_database` does that when the
server it is given is a Citus coordinator, and is a plain CREATE DATABASE
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .database import Connection, Database, with_database


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    role: str  # 'coordinator' or 'worker'


async def has_citus(conn: Connection) -> bool:
    """Whether the `citus` extension is installed in the connection's database."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
    )


async def nodes(conn: Connection) -> list[Node]:
    """The cluster's nodes as the connected database's metadata lists them
    (empty without Citus); the coordinator (group 0) first."""
    if not await has_citus(conn):
        return []
    rows = await conn.fetch(
        """SELECT nodename, nodeport, groupid FROM pg_dist_node
           WHERE noderole = 'primary' AND isactive ORDER BY groupid, nodeport"""
    )
    return [
        Node(r["nodename"], r["nodeport"], "coordinator" if r["groupid"] == 0 else "worker")
        for r in rows
    ]


def node_url(url: str, node: Node, database: str | None = None) -> str:
    """`url` (user, password, options kept) pointed at `node` (and `database`)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    host = f"[{node.host}]" if ":" in node.host else node.host
    netloc = f"{auth}@{host}:{node.port}" if auth else f"{host}:{node.port}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def with_dbname(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def cluster_nodes(url: str) -> list[Node]:
    """The nodes of the Citus cluster whose coordinator database `url` is (empty:
    not Citus)."""

    async def work(db: Database) -> list[Node]:
        return await db.run(nodes)

    return with_database(url, work)


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` and return its URL.

    If `url`'s database belongs to a Citus cluster, the database is created on
    every node with the extension, and the coordinator's copy is given the same
    nodes, so that migrations distribute the schema there."""
    members = cluster_nodes(url)

    def run(target: str, *statements: str) -> None:
        async def work(db: Database) -> None:
            async def each(conn: Connection) -> None:
                for statement in statements:
                    await conn.execute(statement)

            await db.run(each)

        with_database(target, work)

    create = f'CREATE DATABASE "{name}"'
    extension = "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS citus"
    workers = [n for n in members if n.role == "worker"]
    coordinator = next((n for n in members if n.role == "coordinator"), None)
    for worker in workers:
        run(node_url(url, worker), create)
        run(node_url(url, worker, name), extension)
    run(url, create)
    new = with_dbname(url, name)
    if members:
        register = [extension]
        if coordinator is not None:
            register.append(
                f"SELECT citus_set_coordinator_host('{coordinator.host}', {coordinator.port})"
            )
        register += [f"SELECT citus_add_node('{w.host}', {w.port})" for w in workers]
        run(new, *register)
    return new


def drop_database(url: str, name: str) -> None:
    """Drop database `name` from the server of `url` (and from every worker of a
    Citus cluster), closing its connections."""
    members = cluster_nodes(url)
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'

    def run(target: str) -> None:
        async def work(db: Database) -> None:
            await db.run(lambda conn: conn.execute(drop))

        with_database(target, work)

    run(url)
    for worker in (n for n in members if n.role == "worker"):
        run(node_url(url, worker))
