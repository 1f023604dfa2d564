"""End-to-end ingest throughput: 64 sessions x 100-event batches, three ways, one run.

Run on purpose (not a test):

    .venv/bin/python bench/ingest_bench.py [--quick] [--only PHASE]...
    .venv/bin/python bench/ingest_bench.py --quick --sessions 4 --batches 6   # a smoke test
    .venv/bin/python bench/ingest_bench.py --seconds 60   # sustained (~6 min, ~7 GB RAM)

On a fresh embedded PostgreSQL in a temp dir (fsync on), with the same
pre-built chained events (payloads ~300 B of JSON), it measures in turn:

1. direct asyncpg: the service's commit transactions from plain asyncio, rows
   built before timing, 8 writers (bench/direct_asyncpg.py, own process), one
   batch per statement; then again with 8 batches (of 8 sessions) per statement,
   as the service's group commit writes them under load ("direct_grouped");
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
the "other" column says how much a run was disturbed. Every figure also goes
to bench/results/ingest.json (ingest_quick.json with --quick). The three systems
are set up by bench/systems.py, shared with the latency and scale benches.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import results
import trio
from loadgen import Phase
from processes import ROOT
from systems import SUSTAINED_RATE, SYSTEMS, Workload, bench_database, measure, sustained_pool
from workload import EVENTS, ingest_bodies

SESSIONS = 64
WARM_BATCHES = 2
TARGET = 50_000  # events/s for ours with --workers 2 (the target)
# direct, direct_grouped, conventional, ours
PHASES = [SYSTEMS[0], "direct_grouped", *SYSTEMS[1:]]


@dataclass(frozen=True)
class Mode:
    batches: int  # per session, warm-up included
    seconds: float  # timed window per phase, at most


FULL = Mode(batches=150, seconds=15.0)
QUICK = Mode(batches=20, seconds=4.0)


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
    grouped = next((p for p in phases if "/stmt" in p.name), None)
    if ours is not None and grouped is not None and grouped.events_per_s:
        print(
            f"ours / database limit with grouped statements: "
            f"{ours.events_per_s / grouped.events_per_s:.2f}"
        )
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
        "--only", action="append", choices=PHASES, help="run only these phases (repeatable)"
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
    parser.add_argument(
        "--seconds",
        type=float,
        help="the timed window per phase, for sustained load (default 15 s); unless "
        f"--batches is given, the pool holds it at {SUSTAINED_RATE:,} batches/s (a "
        "faster phase runs out first: its window is then shorter, and says so)",
    )
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    if args.seconds is not None:
        if args.seconds <= 0:
            parser.error("--seconds must be positive")
        pool = sustained_pool(args.seconds, args.sessions, WARM_BATCHES)
        mode = Mode(max(mode.batches, pool), args.seconds)
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
    if args.seconds is not None:
        notes.append(f"(--seconds: {args.seconds:.0f}-s windows, sustained load)")
    wanted = args.only or list(PHASES)
    started = time.monotonic()
    ctx = results.context()

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
    print(f"machine speed: {results.describe_speed(ctx['speed_at_start'])}")

    with bench_database("ingest-bench-") as db:
        print(
            f"PostgreSQL {db.version} (embedded, {db.tmp}), fsync={db.fsync}, "
            f"synchronous_commit={db.synchronous_commit}"
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
        work = Workload(bodies, WARM_BATCHES, EVENTS)
        work.pickled(db.tmp)
        work.requests(db.token)

        phases = []
        for kind in PHASES:
            if kind not in wanted:
                continue
            phase = measure(db, kind, work, mode.seconds)
            phases.append(phase)
            print(f"  {phase.name}: {phase.events_per_s:,.0f} events/s", flush=True)
        print()
        report(phases, notes)
        print(f"wall time {time.monotonic() - started:.0f}s")
        by_kind = dict(zip([k for k in PHASES if k in wanted], phases, strict=True))
        figures: dict[str, object] = {
            "workload": {
                "sessions": sessions,
                "batches_per_session": mode.batches,
                "events_per_batch": EVENTS,
                "warm_batches": WARM_BATCHES,
                "payload_bytes": round(payload_bytes),
                "body_bytes": round(sum(sizes) / len(sizes)),
                "window_s": mode.seconds,
                "quick": bool(args.quick),
            },
            "postgres": {"version": db.version, "fsync": db.fsync},
            "phases": {k: p.summary() for k, p in by_kind.items()},
            "ratios": ratios(by_kind),
        }
        name = "ingest_quick" if args.quick else "ingest"
        if args.seconds is not None:  # not the figures the README's table shows
            name = "ingest_sustained"
        path = results.save(name, ctx, figures)
        print(f"figures: {path.relative_to(ROOT)}")
        clean = all(p.ok and not p.first_error for p in phases)
        return 0 if clean else 1


def ratios(by_kind: dict[str, Phase]) -> dict[str, float]:
    """ours / peer and ours / database limit, in events/s, when both were measured."""
    out = {}
    ours = by_kind.get("ours")
    for kind in ("conventional", "direct", "direct_grouped"):
        other = by_kind.get(kind)
        if ours is not None and other is not None and other.events_per_s:
            out[f"ours_over_{kind}"] = round(ours.events_per_s / other.events_per_s, 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
