"""The commit path on a Citus cluster against one PostgreSQL node, in one run.

Run on purpose (not a test), with the local cluster up (`make cluster`):

    .venv/bin/python bench/citus_bench.py [--url URL] [--seconds 10] [--writers 8]

URL (default: DATABASE_URL, else the local cluster's) is a database of a Citus
coordinator. On it this bench makes two fresh databases, migrated by
`python -m service migrate`: a plain one on the coordinator's own server (no
extension: one node, same binaries, same settings) and a distributed one on
every node. The same pre-built commits of the ingest bench's workload (64
sessions x 100-event batches, ~57 KiB each, sealed before timing: see
bench/direct_asyncpg.py) are then written by `writers` asyncpg connections,
each owning its sessions, each commit the service's fast path (ONE statement,
`append_packed_at_head`), in three phases:

1. one node: the plain database;
2. cluster, through the coordinator: every commit delegated to the worker that
   holds its session;
3. cluster, through the workers: the writers connect to the workers in turn
   (any node of a Citus 11+ cluster takes queries), so the coordinator is out of
   the path; a commit whose session is on the other worker is delegated there.

For each phase: events/s, CPU per batch of each PostgreSQL server (its
postmaster and all backends) and of this process (the client), and Citus's own
counters: statements executed as one task or as many (`citus_stat_counters`),
connections opened, and transactions committed on each node per batch. At the
end it prints the scaling model these figures imply. This machine has 2 cores
shared by all three servers and the client: the absolute rates are not the
cluster's, the CPU per batch is what carries over. Figures also go to
bench/results/citus.json (or `--results DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped]
import results
from direct_asyncpg import Commit, build, commit
from processes import PY, ROOT, cpu_seconds
from workload import EVENTS, ingest_bodies

LOCAL_CLUSTER = "postgresql://postgres@127.0.0.1:9700/chain"
SESSIONS = 64
WARM = 2  # batches per session before timing
# The service's CPU per 100-event batch with each batch a statement of its own,
# as on a cluster (group commit off): `CHAIN_GROUP_MAX_BATCHES=1 python
# bench/ingest_bench.py --only ours`, 2026-12-01 at 8b09da0 (it is not measured
# here: this bench runs no service). --service-ms takes a figure of your own.
SERVICE_MS_PER_BATCH = 1.38


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    port: int

    def url(self, base: str, database: str) -> str:
        parts = urlsplit(base)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


@dataclass
class Phase:
    name: str
    batches: int = 0
    events: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    node_cpu: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, Reading] = field(default_factory=dict)  # per node, over the phase

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def per_batch_ms(self, cpu: float) -> float:
        return 1000 * cpu / self.batches if self.batches else 0.0


async def one(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for s in statements:
            await conn.execute(s)
    finally:
        await conn.close()


async def cluster_nodes(url: str) -> list[Node]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT groupid, nodename, nodeport FROM pg_dist_node
               WHERE noderole = 'primary' ORDER BY groupid"""
        )
    finally:
        await conn.close()
    if not rows or rows[0]["groupid"] != 0:
        raise SystemExit(f"{url} is not a Citus coordinator with its nodes registered")
    return [
        Node("coordinator" if r["groupid"] == 0 else f"worker{r['groupid']}", r[1], r[2])
        for r in rows
    ]


async def postmaster(url: str) -> int:
    """The server's postmaster pid: the parent of our backend, asked while the
    backend still lives (it exits once its connection is closed)."""
    conn = await asyncpg.connect(url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        return int(psutil.Process(backend).ppid())
    finally:
        await conn.close()


async def create_databases(base: str, nodes: list[Node], single: str, dist: str) -> None:
    coordinator, workers = nodes[0], nodes[1:]
    ext = "CREATE EXTENSION citus"
    await execute(coordinator.url(base, "postgres"), f'CREATE DATABASE "{single}"')
    for w in workers:
        await execute(w.url(base, "postgres"), f'CREATE DATABASE "{dist}"')
        await execute(w.url(base, dist), ext)
    await execute(coordinator.url(base, "postgres"), f'CREATE DATABASE "{dist}"')
    await execute(
        coordinator.url(base, dist),
        ext,
        f"SELECT citus_set_coordinator_host('{coordinator.host}', {coordinator.port})",
        *(f"SELECT citus_add_node('{w.host}', {w.port})" for w in workers),
    )
    for db in (single, dist):
        # Citus's counters, for this bench's own databases only.
        await execute(
            coordinator.url(base, "postgres"),
            f'ALTER DATABASE "{db}" SET citus.enable_stat_counters = on',
        )


async def drop_databases(base: str, nodes: list[Node], names: list[str]) -> None:
    for node in nodes:
        for name in names:
            await execute(
                node.url(base, "postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([PY, "-m", "service", "migrate"], cwd=ROOT, env=env, check=True)


async def ingest_key(url: str) -> tuple[int, str]:
    key_id = secrets.token_hex(8)
    conn = await asyncpg.connect(url)
    try:
        tenant = int(
            await conn.fetchval("INSERT INTO tenants (name) VALUES ('bench') RETURNING id")
        )
        await conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_hash, scopes) "
            "VALUES ($1, $2, $3, ARRAY['ingest'])",
            key_id,
            tenant,
            os.urandom(32),
        )
    finally:
        await conn.close()
    return tenant, key_id


_COUNTERS = """SELECT coalesce(sum(query_execution_single_shard), 0),
                      coalesce(sum(query_execution_multi_shard), 0),
                      coalesce(sum(connection_establishment_succeeded), 0)
               FROM citus_stat_counters((SELECT oid FROM pg_database
                                         WHERE datname = current_database()))"""
_COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
_WAL = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"


@dataclass
class Reading:
    """One node's counters: Citus's single-shard and multi-shard executions and
    connections opened (to other nodes), transactions committed, WAL position."""

    single: int = 0
    multi: int = 0
    connections: int = 0
    commits: int = 0
    wal: int = 0

    def __sub__(self, other: Reading) -> Reading:
        return Reading(
            self.single - other.single,
            self.multi - other.multi,
            self.connections - other.connections,
            self.commits - other.commits,
            self.wal - other.wal,
        )


async def counters(urls: dict[str, str], citus: bool) -> dict[str, Reading]:
    out: dict[str, Reading] = {}
    for name, url in urls.items():
        conn = await asyncpg.connect(url)
        try:
            r = Reading()
            if citus:
                row = await conn.fetchrow(_COUNTERS)
                assert row is not None
                r.single, r.multi, r.connections = (int(v) for v in row)
            r.commits = int(await conn.fetchval(_COMMITS))
            r.wal = int(await conn.fetchval(_WAL))
            out[name] = r
        finally:
            await conn.close()
    return out


async def run_phase(
    name: str,
    plan: list[list[Commit]],
    writer_urls: list[str],
    node_urls: dict[str, str],
    pids: dict[str, int],
    seconds: float,
    citus: bool,
) -> Phase:
    writers = len(writer_urls)
    conns = [await asyncpg.connect(u) for u in writer_urls]
    phase = Phase(name)
    started = asyncio.Event()
    ready = 0
    t0 = 0.0

    async def writer(w: int) -> None:
        nonlocal ready, t0
        mine = plan[w::writers]
        for k in range(max(len(s) for s in mine)):
            if k == WARM:
                ready += 1
                if ready == writers:
                    t0 = time.perf_counter()
                    started.set()
                await started.wait()
            for commits in mine:
                if k >= len(commits):
                    continue
                if k >= WARM and time.perf_counter() - t0 >= seconds:
                    return
                c = commits[k]
                await commit(conns[w], [c])
                if k >= WARM:
                    phase.batches += 1
                    phase.events += c.events

    me = psutil.Process()

    async def measured() -> None:
        await started.wait()
        before = counters(node_urls, citus)
        cpu0 = {n: sum(cpu_seconds([p]).values()) for n, p in pids.items()}
        c0 = me.cpu_times()
        r0 = await before
        await done.wait()
        phase.seconds = time.perf_counter() - t0
        c1 = me.cpu_times()
        cpu1 = {n: sum(cpu_seconds([p]).values()) for n, p in pids.items()}
        r1 = await counters(node_urls, citus)
        phase.client_cpu = (c1.user + c1.system) - (c0.user + c0.system)
        phase.node_cpu = {n: cpu1[n] - cpu0[n] for n in pids}
        # (Includes the few statements and transactions of the readings themselves.)
        phase.nodes = {n: r1[n] - r0[n] for n in r0}

    done = asyncio.Event()

    async def write_all() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        done.set()

    await asyncio.gather(write_all(), measured())
    for conn in conns:
        await conn.close()
    return phase


def model(phases: dict[str, Phase], workers: int, cores: int, service_ms: float) -> list[str]:
    """The scaling model: batches/s each tier allows, as events/s, for W workers."""
    via_coord, via_workers = phases["coordinator"], phases["workers"]
    coord_ms = via_coord.per_batch_ms(via_coord.node_cpu["coordinator"])
    worker_ms = via_coord.per_batch_ms(
        sum(v for n, v in via_coord.node_cpu.items() if n != "coordinator")
    )
    direct_ms = via_workers.per_batch_ms(
        sum(v for n, v in via_workers.node_cpu.items() if n != "coordinator")
    )
    single_ms = phases["single"].per_batch_ms(phases["single"].node_cpu["coordinator"])
    single_wal = phases["single"].nodes["coordinator"].wal / phases["single"].batches
    lines = [
        "",
        "Scaling model (CPU-bound; per 100-event batch, from the figures above):",
        f"  one node:                {single_ms:5.2f} ms of PostgreSQL CPU",
        f"  cluster via coordinator: {coord_ms:5.2f} ms on the coordinator"
        f" + {worker_ms:5.2f} ms on the session's worker",
        f"  cluster via workers:     {direct_ms:5.2f} ms on the workers (entry + owner)",
        f"  service tier:            {service_ms:5.2f} ms (--service-ms: grouping off)",
        f"  WAL: {single_wal / 1024:.0f} KiB per batch, written once, on the session's node:"
        f" one node must write {single_wal * 10_000 / 2**20:.0f} MB/s of it at 1M events/s",
        f"  events/s with {cores}-core nodes = 100 x min(tiers), each tier cores/ms:",
        "  workers | one node | via coordinator (limit)     | via workers | service cores needed",
    ]
    one_node = EVENTS * cores * 1000 / single_ms
    coord_cap = EVENTS * cores * 1000 / coord_ms
    for w in (1, 2, 4, 8, 16, 32):
        worker_cap = EVENTS * w * cores * 1000 / worker_ms
        via_c = min(coord_cap, worker_cap)
        limit = "coordinator" if coord_cap < worker_cap else "workers"
        via_w = EVENTS * w * cores * 1000 / direct_ms
        service = via_w / EVENTS * service_ms / 1000
        lines.append(
            f"  {w:7d} | {one_node:8,.0f} | {via_c:10,.0f} ({limit:11s})    |"
            f" {via_w:11,.0f} | {service:6.1f}"
        )
    return lines


def report(phases: dict[str, Phase], workers: int, service_ms: float) -> None:
    print("\nphase                     events/s  batches  client CPU ms/batch")
    for p in phases.values():
        print(f"{p.name:24s} {p.rate:9,.0f} {p.batches:8d}   {p.per_batch_ms(p.client_cpu):6.2f}")
    print(
        "\nper node, per batch:       CPU ms  WAL KiB  txns  single-shard  multi-shard"
        "  (+ connections opened in the phase)"
    )
    for p in phases.values():
        for n, r in p.nodes.items():
            b, label = p.batches, f"{p.name}: {n}"
            cpu = p.per_batch_ms(p.node_cpu[n])
            print(
                f"{label:34s} {cpu:6.2f} {r.wal / b / 1024:8.1f} {r.commits / b:5.2f}"
                f" {r.single / b:13.2f} {r.multi / b:12.3f}  (+{r.connections})"
            )
    for line in model(phases, workers, 8, service_ms):
        print(line)
    single = phases["single"].rate
    print(
        f"\n(measured on {os.cpu_count()} cores shared by every server and the client; "
        f"cluster/one-node throughput here: {phases['coordinator'].rate / single:.2f}"
        f" via the coordinator, {phases['workers'].rate / single:.2f} via the workers)"
    )


def figures(phases: dict[str, Phase], service_ms: float) -> dict[str, object]:
    """Every figure `report` prints, per phase and per node (CPU in ms per batch)."""
    return {
        "service_ms_per_batch": service_ms,
        "phases": {
            key: {
                "name": p.name,
                "events_per_s": p.rate,
                "batches": p.batches,
                "seconds": p.seconds,
                "client_cpu_ms_per_batch": p.per_batch_ms(p.client_cpu),
                "nodes": {
                    n: {"cpu_ms_per_batch": p.per_batch_ms(p.node_cpu[n]), **asdict(r)}
                    for n, r in p.nodes.items()
                },
            }
            for key, p in phases.items()
        },
    }


async def main_async(args: argparse.Namespace) -> None:
    started = results.context()
    nodes = await cluster_nodes(args.url)
    workers = nodes[1:]
    tag = secrets.token_hex(3)
    single, dist = f"bench_single_{tag}", f"bench_citus_{tag}"
    coordinator = nodes[0]
    print(f"cluster: {', '.join(f'{n.name}={n.host}:{n.port}' for n in nodes)}", file=sys.stderr)
    bodies = ingest_bodies(SESSIONS, args.batches)
    await create_databases(args.url, nodes, single, dist)
    try:
        for name in (single, dist):
            migrate(coordinator.url(args.url, name))
        pids = {n.name: await postmaster(n.url(args.url, "postgres")) for n in nodes}
        phases: dict[str, Phase] = {}
        keys: dict[str, tuple[int, str]] = {}
        runs = [
            ("single", "one node", single, [coordinator] * args.writers, False),
            ("coordinator", "cluster via coordinator", dist, [coordinator] * args.writers, True),
            (
                "workers",
                "cluster via workers",
                dist,
                [workers[i % len(workers)] for i in range(args.writers)],
                True,
            ),
        ]
        for key, label, db, entry, citus in runs:
            url = coordinator.url(args.url, db)
            await execute(url, "TRUNCATE records, sessions")
            # As systems.reset: every phase starts from a fresh checkpoint on every
            # node, with nothing of the last phase's left for the kernel to write back.
            for node in nodes:
                await execute(node.url(args.url, "postgres"), "CHECKPOINT")
            os.sync()
            if db not in keys:
                keys[db] = await ingest_key(url)
            plan = build(bodies, *keys[db])
            node_urls = {n.name: n.url(args.url, db) for n in (nodes if citus else [coordinator])}
            print(f"{label}: {args.seconds:.0f} s ...", file=sys.stderr)
            phases[key] = await run_phase(
                label,
                plan,
                [n.url(args.url, db) for n in entry],
                node_urls,
                {n: pids[n] for n in node_urls},
                args.seconds,
                citus,
            )
        report(phases, len(workers), args.service_ms)
        path = results.save("citus", started, figures(phases, args.service_ms), args.results)
        print(f"figures: {path}")
    finally:
        await drop_databases(args.url, nodes, [single, dist])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL") or LOCAL_CLUSTER)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="per session, warm-up included")
    parser.add_argument(
        "--results",
        type=Path,
        default=results.RESULTS,
        help="where citus.json goes (default bench/results)",
    )
    parser.add_argument(
        "--service-ms",
        type=float,
        default=SERVICE_MS_PER_BATCH,
        help="the service's CPU ms per batch with grouping off, for the model's last column",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
