"""End-to-end ingest throughput: 64 sessions x 100-event batches, three ways, one run.

Run on purpose (not a test):

    .venv/bin/python bench/ingest_bench.py [--quick] [--only PHASE]...
    .venv/bin/python bench/ingest_bench.py --quick --sessions 4 --batches 6   # a smoke test

On a fresh embedded PostgreSQL in a temp dir (fsync on), with the same
pre-built chained events (payloads ~300 B of JSON), it measures in turn:

1. direct asyncpg: the service's commit transactions from plain asyncio, rows
   built before timing, 8 writers (bench/direct_asyncpg.py, own process);
2. conventional: FastAPI + uvicorn --workers 2 + asyncpg, hashing in Python
   (bench/baseline_app.py);
3. ours: `python -m service serve --workers 2`.

The load generator is this process (bench/loadgen.py): raw trio sockets,
pre-encoded HTTP/1.1 requests, one keep-alive connection and task per session
sending its batches in order, spread evenly over the server's worker processes.
The workload is bench/workload.py, the processes and meters bench/processes.py.
Each phase warms up, runs for a fixed time (or until the batches run out), then checks that
every acknowledged event and seal is stored. Besides rates and latencies it
reports where the cores' time went (load generator, server, PostgreSQL, other
processes, idle), CPU per batch, and WAL per batch: the machine is shared, and
the "other" column says how much a run was disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import trio
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
from workload import EVENTS, ingest_bodies

SESSIONS = 64
DIRECT_WRITERS = 8
WARM_BATCHES = 2
TARGET = 50_000  # events/s for ours with --workers 2 (the target)


@dataclass(frozen=True)
class Mode:
    batches: int  # per session, warm-up included
    seconds: float  # timed window per phase, at most


FULL = Mode(batches=150, seconds=15.0)
QUICK = Mode(batches=20, seconds=4.0)


# --- the database, from plain asyncio (this process never imports trio_asyncio) -----


async def reset(conn: asyncpg.Connection) -> None:
    """Empty the chains (keep tenants and keys) and start from a fresh checkpoint."""
    await conn.execute("TRUNCATE records, sessions")
    await conn.execute("CHECKPOINT")


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
    events, seals, heads = with_conn(dsn, stored_counts)
    phase.ok = events == phase.events and seals == phase.batches and heads == phase.events
    verdict = "nothing lost" if phase.ok else "MISMATCH"
    phase.stored = (
        f"{phase.name}: stored {events:,} events + {seals:,} seals (heads sum {heads:,}); "
        f"acknowledged {phase.events:,} events in {phase.batches:,} batches: {verdict}"
    )


# --- the three phases ------------------------------------------------------------------


@dataclass
class Setup:
    tmp: Path
    dsn: str
    pg_pid: int
    key_id: str
    tenant_id: int
    bodies_file: Path
    requests: list[list[bytes]]
    mode: Mode


def phase_direct(s: Setup) -> Phase:
    writers = min(DIRECT_WRITERS, len(s.requests))  # each writer owns sessions
    cfg = {
        "dsn": s.dsn,
        "bodies": str(s.bodies_file),
        "tenant_id": s.tenant_id,
        "key_id": s.key_id,
        "writers": writers,
        "warm_batches": WARM_BATCHES,
        "duration": s.mode.seconds,
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

    meter = CpuMeter(lambda: process_cpu(child.pid), None, s.pg_pid)
    phase = Phase(f"direct asyncpg ({writers} writers)")
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


def phase_http(
    s: Setup, name: str, argv: list[str], env: dict[str, str], port: int, ready: str
) -> Phase:
    server = Server(argv, {**os.environ, **env, "DATABASE_URL": s.dsn}, s.tmp / f"{port}.log")
    try:
        server.wait_ready(port, ready)
        phase = run_http_load(
            name,
            port,
            s.requests,
            warm=WARM_BATCHES,
            seconds=s.mode.seconds,
            server_pid=server.pid,
            pg_pid=s.pg_pid,
        )
    except BaseException:
        print(f"--- {name} server log (tail) ---\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    if phase.first_error:
        print(f"--- {name} server log (tail) ---\n{server.tail()}", file=sys.stderr)
    return phase


def phase_conventional(s: Setup) -> Phase:
    port = free_port()
    argv = [PY, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(BENCH)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    return phase_http(s, "conventional FastAPI+uvicorn -w2", argv, {}, port, "/healthz")


def phase_ours(s: Setup) -> Phase:
    port = free_port()
    data_dir = s.tmp / "ours"
    argv = [PY, "-m", "service", "serve", "--workers", "2", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    return phase_http(s, "ours: service serve -w2", argv, {}, port, "/readyz")


PHASES: dict[str, Callable[[Setup], Phase]] = {
    "direct": phase_direct,
    "conventional": phase_conventional,
    "ours": phase_ours,
}


# --- report ---------------------------------------------------------------------------


def report(phases: list[Phase], notes: list[str]) -> None:
    base_direct = next((p for p in phases if p.name.startswith("direct")), None)
    base_conv = next((p for p in phases if p.name.startswith("conventional")), None)
    cols = (
        f"{'phase':34s} {'events/s':>9s} {'batches/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'x direct':>8s} {'x conv':>7s} {'window':>7s} | {'client':>6s} {'server':>6s} "
        f"{'pg':>6s} {'other':>6s} {'idle':>6s} | non-200"
    )
    print(cols)
    print("-" * len(cols))
    for p in phases:
        vs_d = p.events_per_s / base_direct.events_per_s if base_direct else float("nan")
        vs_c = p.events_per_s / base_conv.events_per_s if base_conv else float("nan")
        bad = {k: v for k, v in p.statuses.items() if k not in ("200", "ok")}
        retried = ", ".join(f"{k} retried x{v}" for k, v in p.retried.items())
        non200 = ", ".join(f"{k}: {v}" for k, v in bad.items()) or "0"
        server = f"{p.cpu.server:6.1f}" if p.cpu.server else f"{'-':>6s}"
        print(
            f"{p.name:34s} {p.events_per_s:9,.0f} {p.batches_per_s:9,.0f} "
            f"{p.percentile(0.50):7.1f} {p.percentile(0.99):7.1f} {vs_d:8.2f} {vs_c:7.2f} "
            f"{p.seconds:6.1f}s | {p.cpu.client:6.1f} {server} {p.cpu.pg:6.1f} "
            f"{p.cpu.other:6.1f} {p.cpu.idle:6.1f} | "
            f"{non200}{' (' + retried + ')' if retried else ''}"
        )
    print()
    cores = len(os.sched_getaffinity(0))
    print(
        f"{'per 100-event batch: CPU ms':34s} {'client':>7s} {'server':>7s} {'pg':>7s} "
        f"{'total':>7s} {'WAL KiB':>8s}   CPU-bound ceiling on {cores} otherwise idle cores"
    )
    for p in phases:
        if not p.timed_batches:
            continue
        per = [x * 1000 / p.timed_batches for x in (p.cpu.client, p.cpu.server, p.cpu.pg)]
        # A window too short for the CPU clocks' 10 ms ticks has no ceiling.
        ceiling = cores * 1000 / sum(per) * EVENTS if sum(per) else float("nan")
        print(
            f"{p.name:34s} {per[0]:7.2f} {per[1]:7.2f} {per[2]:7.2f} {sum(per):7.2f}"
            f" {p.wal_bytes / max(p.batches, 1) / 1024:8.0f}   {ceiling:9,.0f} events/s"
        )
    print()
    print(
        "client .. idle: CPU seconds of the timed window (window x cores in all) spent by the "
        "load generator (this process; for direct asyncpg, its own process, which also "
        "drives the database), the server's process tree, all PostgreSQL processes, any "
        "other process on the machine, and idle/iowait."
    )
    for p in phases:
        share = p.cpu.other / (p.seconds * cores) if p.seconds else 0.0
        if share > 0.1:
            print(
                f"WARNING: other processes took {share:.0%} of the cores during "
                f"{p.name!r}: its figures are disturbed; rerun on a quiet machine"
            )
    for p in phases:
        print(p.stored)
        if p.workers:
            print(f"  workers (connections, CPU s in window): {p.workers}; {p.spread_note}")
        if p.first_error:
            print(f"  first error: {p.first_error}")
    ours = next((p for p in phases if p.name.startswith("ours")), None)
    if ours is not None:
        verdict = "met" if ours.events_per_s >= TARGET else "NOT met"
        print(
            f"target: ours >= {TARGET:,} events/s with --workers 2: {verdict} "
            f"({ours.events_per_s:,.0f})"
        )
    for note in notes:
        print(note)


# --- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer batches")
    parser.add_argument(
        "--only", action="append", choices=list(PHASES), help="run only these phases (repeatable)"
    )
    parser.add_argument(
        "--sessions", type=int, default=SESSIONS, help=f"sessions (default {SESSIONS})"
    )
    parser.add_argument(
        "--batches",
        type=int,
        help=f"batches per session, warm-up included (at least {WARM_BATCHES + 1}; "
        f"default {FULL.batches}, {QUICK.batches} with --quick)",
    )
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    if args.batches is not None:
        if args.batches <= WARM_BATCHES:
            parser.error(f"--batches must be at least {WARM_BATCHES + 1}")
        mode = Mode(args.batches, mode.seconds)
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    sessions: int = args.sessions
    notes = ["(--quick: short windows, figures are indicative only)"] if args.quick else []
    if args.batches is not None or sessions != SESSIONS:
        notes.append(
            "(--sessions/--batches: not the standard workload, figures are indicative only)"
        )
    wanted = args.only or list(PHASES)
    started = time.monotonic()

    cpus = os.cpu_count()
    affinity = len(os.sched_getaffinity(0))
    load1, load5, _ = os.getloadavg()
    print(f"ingest_bench  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC  on {platform.node()}")
    print(
        f"cores: {cpus} (usable {affinity}); load average {load1:.2f} (1 min), "
        f"{load5:.2f} (5 min); "
        f"Python {platform.python_version()}; trio {trio.__version__}; "
        f"asyncpg {asyncpg.__version__}"
    )

    with fresh_postgres("ingest-bench-") as pg:
        tmp = pg.tmp

        async def create_db(conn: asyncpg.Connection) -> tuple[str, str, str]:
            await conn.execute("CREATE DATABASE bench")
            return (
                await conn.fetchval("SHOW server_version"),
                await conn.fetchval("SHOW fsync"),
                await conn.fetchval("SHOW synchronous_commit"),
            )

        version, fsync, sync_commit = with_conn(pg.dsn, create_db)
        dsn = pg.server.dsn("bench")
        print(
            f"PostgreSQL {version} (embedded, {tmp}), fsync={fsync}, "
            f"synchronous_commit={sync_commit}"
        )

        # The key (creating tenant and schema), as an operator would.
        token = service_command(
            ["keys", "create", "--tenant", "bench", "--scope", "ingest"],
            {**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "WARNING"},
        )
        key_id = token.split("_")[1]
        tenant_id = with_conn(
            dsn, lambda c: c.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
        )

        t = time.perf_counter()
        bodies = ingest_bodies(sessions, mode.batches)
        built = time.perf_counter() - t
        sizes = [len(b) for s in bodies for b in s]
        probe = orjson.loads(bodies[0][0])["events"]
        payload_bytes = sum(len(orjson.dumps(e["payload"])) for e in probe) / len(probe)
        print(
            f"workload: {sessions} sessions x {mode.batches} batches x {EVENTS} events "
            f"({sessions * mode.batches * EVENTS:,} events; first {WARM_BATCHES} batches of each "
            f"session are warm-up), payload {payload_bytes:.0f} B, "
            f"body {sum(sizes) / len(sizes) / 1024:.1f} KiB; "
            f"timed window <= {mode.seconds:.0f}s per phase; built in {built:.1f}s"
        )
        bodies_file = tmp / "bodies.pickle"
        with bodies_file.open("wb") as f:
            pickle.dump(bodies, f, protocol=pickle.HIGHEST_PROTOCOL)
        requests = encode_requests(bodies, token)
        del bodies
        setup = Setup(tmp, dsn, pg.pid, key_id, tenant_id, bodies_file, requests, mode)

        phases = []
        for kind in PHASES:
            if kind not in wanted:
                continue
            with_conn(dsn, reset)
            wal = with_conn(dsn, wal_position)
            phase = PHASES[kind](setup)
            phase.wal_bytes = with_conn(dsn, wal_position) - wal
            check_stored(dsn, phase)
            phases.append(phase)
            print(f"  {phase.name}: {phase.events_per_s:,.0f} events/s", flush=True)
        print()
        report(phases, notes)
        print(f"wall time {time.monotonic() - started:.0f}s")
        clean = all(p.ok and not p.first_error for p in phases)
        return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
