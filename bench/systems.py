"""The three ways of ingesting that the benches compare, on one embedded PostgreSQL:

- "direct": the service's commit transactions from plain asyncio + asyncpg, rows
  built before timing (bench/direct_asyncpg.py, own process): the database's limit;
- "conventional": FastAPI + uvicorn --workers 2 + asyncpg, hashing in Python
  (bench/baseline_app.py): the peer;
- "ours": `python -m service serve --workers 2`.

`bench_database` starts PostgreSQL and creates the ingest key; `reset` empties the
chains between measurements; `check_stored` counts what was stored against what
was acknowledged. The load itself comes from bench/loadgen.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from loadgen import Phase, encode_requests, run_http_load
from processes import (
    BENCH,
    PY,
    ROOT,
    CpuMeter,
    Server,
    free_port,
    fresh_postgres,
    process_cpu,
    service_command,
    with_conn,
)

HTTP_SYSTEMS = ("conventional", "ours")
SYSTEMS = ("direct", *HTTP_SYSTEMS)
LABELS = {  # in plots and tables
    "direct": "database limit (direct asyncpg)",
    "conventional": "peer (FastAPI + uvicorn + asyncpg)",
    "ours": "ours (service serve -w2)",
}
PHASE_NAMES = {  # in the benches' printed tables
    "conventional": "conventional FastAPI+uvicorn -w2",
    "ours": "ours: service serve -w2",
}
DIRECT_WRITERS = 8
# "direct_grouped" (bench/ingest_bench.py only): the database limit when its
# commits are grouped as the service's group commit groups them under load.
DIRECT_GROUP = 8
# The rate a sustained run's pool of pre-built batches is sized for, in batches
# per second (ours' maximum here: ~700-1,000).
SUSTAINED_RATE = 1000


def sustained_pool(seconds: float, sessions: int, warm: int, share: float = 1.0) -> int:
    """Batches per session (warm-up included) that keep `share` of SUSTAINED_RATE
    coming for `seconds`; a faster run uses them up sooner."""
    return warm + math.ceil(seconds * SUSTAINED_RATE * share / sessions)


# --- the database, from plain asyncio (this process never imports trio_asyncio) -----


async def reset(conn: asyncpg.Connection) -> None:
    """Empty the chains (keep tenants and keys), start from a fresh checkpoint, and
    leave the machine nothing dirty to write back.

    The last is the bench's own hygiene. The kernel writes a dirty page back
    ~30 s after it was written (vm.dirty_expire_centisecs), and that writeback
    queues the WAL flushes of whatever is being measured then. The workload's
    pickle alone is ~0.7 GB: half a minute after it was written, single WAL
    flushes took 150-160 ms (pg_stat_activity: every committer on IO:WalSync or
    LWLock:WALWrite), and an open-loop point at a fixed 40k events/s had a p99
    of 315-369 ms instead of 20-54 ms.
    """
    await conn.execute("TRUNCATE records, sessions")
    await conn.execute("CHECKPOINT")
    os.sync()


async def wal_position(conn: asyncpg.Connection) -> int:
    """The current WAL insert position, in bytes (asyncpg decodes pg_lsn to int)."""
    return int(await conn.fetchval("SELECT pg_current_wal_lsn()"))


async def stored_counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE NOT is_seal), count(*) FILTER (WHERE is_seal),
                  (SELECT coalesce(sum(next_seq), 0) FROM sessions)
           FROM records"""
    )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def check_stored(dsn: str, phase: Phase) -> None:
    """Compare the stored rows with what the phase saw acknowledged (after `reset`)."""
    events, seals, heads = with_conn(dsn, stored_counts)
    phase.ok = events == phase.events and seals == phase.batches and heads == phase.events
    verdict = "nothing lost" if phase.ok else "MISMATCH"
    phase.stored = (
        f"{phase.name}: stored {events:,} events + {seals:,} seals (heads sum {heads:,}); "
        f"acknowledged {phase.events:,} events in {phase.batches:,} batches: {verdict}"
    )


@dataclass(frozen=True)
class Database:
    """The bench's PostgreSQL, with the schema, one tenant and its ingest key."""

    tmp: Path
    dsn: str
    pg_pid: int
    token: str
    key_id: str
    tenant_id: int
    version: str
    fsync: str
    synchronous_commit: str


@contextlib.contextmanager
def bench_database(prefix: str) -> Iterator[Database]:
    """A fresh embedded PostgreSQL with a `bench` database and an ingest key."""
    with fresh_postgres(prefix) as pg:

        async def create_db(conn: asyncpg.Connection) -> tuple[str, str, str]:
            await conn.execute("CREATE DATABASE bench")
            return (
                await conn.fetchval("SHOW server_version"),
                await conn.fetchval("SHOW fsync"),
                await conn.fetchval("SHOW synchronous_commit"),
            )

        version, fsync, sync_commit = with_conn(pg.dsn, create_db)
        dsn = pg.server.dsn("bench")
        # The key (creating tenant and schema), as an operator would.
        token = service_command(
            ["keys", "create", "--tenant", "bench", "--scope", "ingest"],
            {**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "WARNING"},
        )
        tenant_id = with_conn(
            dsn, lambda c: c.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
        )
        yield Database(
            pg.tmp, dsn, pg.pid, token, token.split("_")[1], tenant_id, version, fsync, sync_commit
        )


@dataclass
class Workload:
    """Request bodies per session, in order; `warm` of each session's are warm-up."""

    bodies: list[list[bytes]]
    warm: int
    events: int  # per batch
    _requests: list[list[bytes]] | None = None
    _pickled: Path | None = None

    def __post_init__(self) -> None:
        self.sessions = len(self.bodies)

    def requests(self, token: str) -> list[list[bytes]]:
        if self._requests is None:
            self._requests = encode_requests(self.bodies, token)
        return self._requests

    def pickled(self, tmp: Path) -> Path:
        """The bodies in a file, for direct_asyncpg.py's process."""
        if self._pickled is None:
            self._pickled = tmp / "bodies.pickle"
            with self._pickled.open("wb") as f:
                pickle.dump(self.bodies, f, protocol=pickle.HIGHEST_PROTOCOL)
        return self._pickled

    def drop(self) -> None:
        """Free the memory (and the file) once every system has run."""
        self.bodies, self._requests = [], None
        if self._pickled is not None:
            self._pickled.unlink(missing_ok=True)
            self._pickled = None


# --- the servers ---------------------------------------------------------------------


def server_argv(kind: str, port: int, tmp: Path) -> tuple[list[str], str]:
    """The command of an HTTP system, and its readiness path."""
    if kind == "conventional":
        argv = [PY, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(BENCH)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        return argv, "/healthz"
    if kind == "ours":
        argv = [PY, "-m", "service", "serve", "--workers", "2", "--port", str(port)]
        argv += ["--data-dir", str(tmp / "ours")]
        return argv, "/readyz"
    raise ValueError(kind)


@contextlib.contextmanager
def serving(db: Database, kind: str) -> Iterator[tuple[Server, int]]:
    """A fresh server of `kind`, ready on its port; its log tail is printed on errors."""
    port = free_port()
    argv, ready = server_argv(kind, port, db.tmp)
    server = Server(argv, {**os.environ, "DATABASE_URL": db.dsn}, db.tmp / f"{kind}-{port}.log")
    try:
        server.wait_ready(port, ready)
        yield server, port
    except BaseException:
        print(f"--- {kind} server log (tail) ---\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


def measure_http(db: Database, kind: str, work: Workload, seconds: float) -> Phase:
    """Closed loop: a fresh server of `kind`, every session sending its batches."""
    with serving(db, kind) as (server, port):
        phase = run_http_load(
            PHASE_NAMES[kind],
            port,
            work.requests(db.token),
            warm=work.warm,
            seconds=seconds,
            server_pid=server.pid,
            pg_pid=db.pg_pid,
            events=work.events,
        )
        if phase.first_error:
            print(f"--- {kind} server log (tail) ---\n{server.tail()}", file=sys.stderr)
    return phase


def measure_direct(
    db: Database, work: Workload, seconds: float, writers: int = DIRECT_WRITERS, group: int = 1
) -> Phase:
    """The database's limit: bench/direct_asyncpg.py in its own process, one batch
    per statement or `group` (of different sessions) per statement."""
    writers = min(writers, work.sessions)  # each writer owns sessions
    cfg: dict[str, Any] = {
        "dsn": db.dsn,
        "bodies": str(work.pickled(db.tmp)),
        "tenant_id": db.tenant_id,
        "key_id": db.key_id,
        "writers": writers,
        "group": group,
        "warm_batches": work.warm,
        "duration": seconds,
    }
    child = subprocess.Popen(
        [PY, str(BENCH / "direct_asyncpg.py"), json.dumps(cfg)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None

    def expect(word: str) -> None:
        line = child.stdout.readline() if child.stdout else ""
        if line.strip() != word:
            raise RuntimeError(f"direct_asyncpg.py: expected {word!r}, got {line!r}")

    meter = CpuMeter(lambda: process_cpu(child.pid), None, db.pg_pid)
    grouped = f", {group}/stmt" if group > 1 else ""
    phase = Phase(f"direct asyncpg ({writers} writers{grouped})")
    try:
        expect("start")
        meter.start()
        expect("end")
        phase.cpu = meter.stop()
        child.stdin.write("go on\n")
        child.stdin.close()
        result = json.loads(child.stdout.readline())
    finally:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    phase.events, phase.batches = result["events"], result["batches"]
    phase.timed_events, phase.timed_batches = result["timed_events"], result["timed_batches"]
    phase.seconds, phase.latencies = result["seconds"], result["latencies"]
    phase.statuses["ok"] = result["batches"]
    return phase


def measure(db: Database, kind: str, work: Workload, seconds: float) -> Phase:
    """One closed-loop measurement of `kind` on an emptied database, stored rows checked."""
    with_conn(db.dsn, reset)
    wal = with_conn(db.dsn, wal_position)
    if kind == "direct":
        phase = measure_direct(db, work, seconds)
    elif kind == "direct_grouped":
        phase = measure_direct(db, work, seconds, group=DIRECT_GROUP)
    else:
        phase = measure_http(db, kind, work, seconds)
    phase.wal_bytes = with_conn(db.dsn, wal_position) - wal
    check_stored(db.dsn, phase)
    return phase


def attempt(name: str, run: Callable[[], Phase]) -> Phase:
    """`run()`, or a failed phase saying why: one point that times out or crashes
    must not lose the rest of a long run."""
    try:
        return run()
    except Exception as exc:
        phase = Phase(name, ok=False, first_error=f"{type(exc).__name__}: {exc}"[:500])
        phase.stored = f"{name}: not measured"
        print(f"{name}: {phase.first_error}", file=sys.stderr)
        return phase


def raise_fd_limit(need: int) -> None:
    """Up to 1,024 sessions hold a socket each here: lift the soft limit of open
    files to the hard one if it is below `need` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, top), hard))
