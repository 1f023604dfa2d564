"""On a Citus cluster: the schema is distributed as designed (migration 0003), and
every commit statement is one task on the worker that holds the session, by
`EXPLAIN` and by Citus's own statement counters."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

from service.core.outcomes import Appended, Conflict
from service.storage import queries, sessions
from service.storage.database import Connection, Database, PoolSettings, open_database
from service.storage.locks import SESSION_HEAD

from ..chain import ZERO, Chain, relink
from ..support import MakeKey, direct_committer
from .conftest import Cluster, shard_node

ZERO_ARGS = f"'{ZERO}'"


async def test_reference_and_distributed_tables_and_functions(
    db: Database, cluster: Cluster
) -> None:
    async def work(conn: Connection) -> None:
        tables = {
            r["rel"]: (r["partmethod"], r["column"], r["colocationid"])
            for r in await conn.fetch(
                """SELECT logicalrelid::text AS rel, partmethod::text,
                          column_to_column_name(logicalrelid, partkey) AS column, colocationid
                   FROM pg_dist_partition"""
            )
        }
        for name in ("tenants", "api_keys", "signing_keys", "schema_migrations"):
            assert tables[name][0] == "n", (name, tables[name])  # reference table
        assert tables["sessions"][:2] == ("h", "session_id")
        assert tables["records"][:2] == ("h", "session_id")
        colocation = tables["sessions"][2]
        assert tables["records"][2] == colocation
        functions = {
            r["fn"]: (r["distribution_argument_index"], r["colocationid"], r["force_delegation"])
            for r in await conn.fetch(
                """SELECT p.proname AS fn, o.distribution_argument_index, o.colocationid,
                          o.force_delegation
                   FROM pg_dist_object o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass
                                                      AND o.objid = p.oid
                   WHERE p.proname IN ('append_at_head', 'append_packed_at_head',
                                       'lock_session_head')"""
            )
        }
        # By their third argument, p_session, with the sessions' shards.
        assert functions == {
            "append_at_head": (2, colocation, True),
            "append_packed_at_head": (2, colocation, True),
            "lock_session_head": (2, colocation, True),
        }
        # The shards are spread over both workers, none on the coordinator.
        ports = {
            r[0]
            for r in await conn.fetch(
                """SELECT DISTINCT nodeport FROM pg_dist_shard_placement p
                   JOIN pg_dist_shard s USING (shardid)
                   WHERE s.logicalrelid = 'records'::regclass"""
            )
        }
        assert ports == {w.port for w in cluster.workers}

    await db.run(work)


def _tasks(plan: list[str]) -> tuple[int, set[int]]:
    """Task count and the ports of the nodes the tasks run on, from EXPLAIN."""
    text = "\n".join(plan)
    count = re.search(r"Task Count: (\d+)", text)
    assert count is not None, text
    return int(count[1]), {int(p) for p in re.findall(r"Node: host=\S+ port=(\d+)", text)}


async def test_each_commit_statement_is_one_task_on_the_sessions_worker(
    db: Database, cluster: Cluster
) -> None:
    """EXPLAIN each statement of both commit paths, with the arguments inlined
    (as the custom plan of the service's prepared statements has them)."""

    async def work(conn: Connection) -> None:
        for _ in range(8):  # sessions on both workers
            sid = str(uuid.uuid4())
            _, port = await shard_node(conn, sid)
            a = f"{SESSION_HEAD}, 1, '{sid}'::uuid, 'k'"
            append = (  # the statement both paths write with (queries.APPEND_AT_HEAD)
                f"SELECT append_packed_at_head({a}, 0, {ZERO_ARGS}, {ZERO_ARGS}, 0, 'k', 't',"
                " 'h', ARRAY['\\x00'::bytea], 't', 'h', '\\x00'::bytea, 'h', 't', 't')"
            )
            fast = [r[0] for r in await conn.fetch(f"EXPLAIN (COSTS OFF) {append}")]
            assert _tasks(fast) == (1, {port}), fast
            # The judged path: the same, inside a transaction (force_delegation).
            async with conn.transaction():
                for statement in (
                    f"SELECT * FROM lock_session_head({a})",
                    append,
                    queries.STORED_HASHES.replace("$1", "1")
                    .replace("$2", f"'{sid}'")
                    .replace("$3", "0")
                    .replace("$4", "5"),
                    queries.COVERING_SEAL.replace("$1", "1")
                    .replace("$2", f"'{sid}'")
                    .replace("$3", "0"),
                    sessions.REPLAY.replace("$1", "1")
                    .replace("$2", f"'{sid}'")
                    .replace("$3", "0")
                    .replace("$4", "10"),
                ):
                    plan = [r[0] for r in await conn.fetch(f"EXPLAIN (COSTS OFF) {statement}")]
                    assert _tasks(plan) == (1, {port}), (statement, plan)

    await db.run(work)


_COUNTERS = """SELECT query_execution_single_shard, query_execution_multi_shard
               FROM citus_stat_counters((SELECT oid FROM pg_database
                                         WHERE datname = current_database()))"""


async def _counters(conn: Connection) -> tuple[int, int]:
    row = await conn.fetchrow(_COUNTERS)
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


async def test_citus_counts_one_single_shard_execution_per_commit_statement(
    db: Database, cluster: Cluster, make_key: MakeKey
) -> None:
    """Citus's counters on the coordinator, over real commits of both paths: the
    fast path is one single-shard execution, the judged path one per statement;
    never a multi-shard one."""
    await db.run(
        lambda conn: conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET citus.enable_stat_counters = on',"
            " current_database()); END $$"
        )
    )
    committer = await direct_committer(db, make_key)
    # A pool opened after the setting, so that its backends count.
    async with open_database(PoolSettings(cluster.url, max_size=2)) as counted:
        c = replace(committer, db=counted)
        chain = Chain()
        events = chain.make(30)
        head = None
        before = await counted.run(_counters)
        for i in range(0, 30, 10):
            outcome, head = await c.append(events[i : i + 10], head)
            assert isinstance(outcome, Appended) and outcome.accepted == 10
        fast = await counted.run(_counters)
        assert (fast[0] - before[0], fast[1] - before[1]) == (3, 0)

        # Judged: a retry of stored events plus new ones (lock_session_head,
        # stored_hashes, append_packed_at_head), and a fork (lock_session_head,
        # stored_hashes).
        more = chain.make(5)
        outcome, _ = await c.append(events[25:] + more, None)
        assert isinstance(outcome, Appended) and (outcome.duplicates, outcome.accepted) == (5, 5)
        judged = await counted.run(_counters)
        assert (judged[0] - fast[0], judged[1] - fast[1]) == (3, 0)
        forged = relink([{**e, "kind": "forged"} for e in more], events[-1]["hash"])
        outcome, _ = await c.append(forged, None)
        assert isinstance(outcome, Conflict) and outcome.code == "chain_fork"
        after = await counted.run(_counters)
        assert (after[0] - judged[0], after[1] - judged[1]) == (2, 0)
