"""Batch latency at a fixed arrival rate (open loop), 10 % ... 100 % of the maximum.

Run on purpose (not a test):

    .venv/bin/python bench/latency_bench.py            # ~6 min
    .venv/bin/python bench/latency_bench.py --quick    # ~1 min, indicative only
    # the goal's point alone, sustained for a minute (~4 min; its own JSON, no plot):
    .venv/bin/python bench/latency_bench.py --only ours --fractions 0.7 --goal-seconds 60

On a fresh embedded PostgreSQL (fsync on), with 64 sessions of 100-event batches
(payloads ~300 B, the ingest bench's workload):

1. the maximum, closed loop as in bench/ingest_bench.py, of ours
   (`serve --workers 2`), of the peer (FastAPI + uvicorn --workers 2 + asyncpg,
   bench/baseline_app.py) and of the database limit (the same commits straight
   through asyncpg, bench/direct_asyncpg.py);
2. for ours and the peer, each at 10 %, 20 %, ... 100 % of its own maximum: an
   open-loop run (bench/loadgen.py `run_open_loop`): batches arrive on a Poisson
   schedule at that rate, dealt round-robin to the sessions, each session's in
   order; latency is from each batch's scheduled arrival to its answer, so a
   stall counts against every batch it holds up (no coordinated omission).

Every point runs on an emptied database, after a checkpoint and a sync (the kernel
has nothing of an earlier step's left to write back: systems.reset), on a freshly
started server (after one closed-loop warm-up batch per session); every answer
must be 200 (429/503 are retried after 50 ms, the wait counted in the latency),
and the stored rows are counted against the acknowledged ones. The goal of issue
12: ours' p99 <= 50 ms at 70 % of its maximum. The database limit is drawn as
its maximum rate (it has no HTTP to put a latency on). Figures go to
bench/results/latency.json and the plot to docs/bench/latency.png (with --quick:
latency_quick.* in bench/results/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import results
from loadgen import Phase, arrival_schedule, run_open_loop
from processes import ROOT, with_conn
from progress import Progress
from systems import (
    HTTP_SYSTEMS,
    LABELS,
    SUSTAINED_RATE,
    SYSTEMS,
    Database,
    Workload,
    attempt,
    bench_database,
    check_stored,
    measure,
    reset,
    serving,
    sustained_pool,
    wal_position,
)
from workload import EVENTS, build_bodies

GOAL_FRACTION = 0.7
GOAL_P99_MS = 50.0
WARM = 1  # closed-loop batches per session before the schedule starts
STARTUP_S = 4.0  # a server's start, connections, warm-up: for the progress bar


@dataclass(frozen=True)
class Mode:
    sessions: int
    batches: int  # per session in the pool, warm-up included
    max_seconds: float  # closed-loop window of the maximum
    fractions: tuple[float, ...]
    samples: int  # batches wanted per open-loop point ...
    min_seconds: float  # ... within these bounds
    cap_seconds: float
    goal_samples: int  # at the goal's point (70 %)
    goal_cap_seconds: float


FULL = Mode(
    sessions=64,
    batches=200,
    max_seconds=8.0,
    fractions=tuple(k / 10 for k in range(1, 11)),
    samples=2000,
    min_seconds=4.0,
    cap_seconds=10.0,
    goal_samples=6000,
    goal_cap_seconds=20.0,
)
QUICK = Mode(
    sessions=64,
    batches=24,
    max_seconds=1.5,
    fractions=(0.1, 0.7, 1.0),
    samples=300,
    min_seconds=1.5,
    cap_seconds=2.0,
    goal_samples=600,
    goal_cap_seconds=3.0,
)


def sustained(mode: Mode, seconds: float) -> Mode:
    """`mode` with its goal point run for `seconds`, and a pool that holds it."""
    per_session = sustained_pool(seconds, mode.sessions, WARM, GOAL_FRACTION)
    return Mode(
        **{
            **mode.__dict__,
            "batches": max(mode.batches, per_session),
            "goal_samples": 10**9,  # the duration decides
            "goal_cap_seconds": seconds,
        }
    )


def point_seconds(mode: Mode, fraction: float, batches_per_s: float) -> float:
    """How long an open-loop point runs: enough batches for its percentiles."""
    goal = math.isclose(fraction, GOAL_FRACTION)
    want = (mode.goal_samples if goal else mode.samples) / batches_per_s
    cap = mode.goal_cap_seconds if goal else mode.cap_seconds
    return min(cap, max(mode.min_seconds, want))


def open_point(
    db: Database, kind: str, work: Workload, rate: float, seconds: float, arrivals: str, seed: int
) -> Phase:
    """One open-loop run of `kind` at `rate` batches/s for about `seconds`."""
    pool = work.requests(db.token)
    room = min(len(s) for s in pool) - WARM  # batches per session the pool holds
    batches = min(round(rate * seconds), room * len(pool))
    schedule = arrival_schedule(len(pool), batches, rate, arrivals, seed)
    requests = [s[: WARM + len(offsets)] for s, offsets in zip(pool, schedule, strict=True)]
    with_conn(db.dsn, reset)
    wal = with_conn(db.dsn, wal_position)
    with serving(db, kind) as (server, port):
        phase = run_open_loop(
            f"{kind} @ {rate * EVENTS:,.0f} events/s",
            port,
            requests,
            schedule,
            warm=WARM,
            rate=rate,
            server_pid=server.pid,
            pg_pid=db.pg_pid,
            events=EVENTS,
        )
        if phase.first_error:
            print(f"--- {kind} server log (tail) ---\n{server.tail()}", file=sys.stderr)
    phase.wal_bytes = with_conn(db.dsn, wal_position) - wal
    check_stored(db.dsn, phase)
    return phase


def row(fraction: float | None, p: Phase, cores: int) -> str:
    lag = p.percentile(0.99, p.lags) if p.lags else float("nan")
    other = p.cpu.other_share(cores)
    bad = {k: v for k, v in p.statuses.items() if k not in ("200", "ok")}
    retried = sum(p.retried.values())
    head = f"{fraction:5.0%}" if fraction is not None else "  max"
    offered = f"{p.offered_events_per_s:9,.0f}" if p.offered_events_per_s else f"{'closed':>9s}"
    return (
        f"{head} {offered} {p.events_per_s:9,.0f} {p.percentile(0.5):7.1f} "
        f"{p.percentile(0.9):7.1f} {p.percentile(0.99):7.1f} {p.percentile(0.999):7.1f} "
        f"{(max(p.latencies) * 1000 if p.latencies else float('nan')):7.1f} {lag:6.1f} "
        f"{len(p.latencies):6d} {other:6.0%} "
        f"{'ok' if p.ok and not p.first_error else 'FAILED'}"
        f"{' non-200 ' + str(bad) if bad else ''}{f' ({retried} retried)' if retried else ''}"
    )


HEADER = (
    f"{'load':>5s} {'offered':>9s} {'achieved':>9s} {'p50':>7s} {'p90':>7s} {'p99':>7s} "
    f"{'p99.9':>7s} {'max':>7s} {'lag99':>6s} {'n':>6s} {'other':>6s} stored"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 points, short windows")
    parser.add_argument(
        "--only", action="append", choices=HTTP_SYSTEMS, help="sweep only these (repeatable)"
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="gaps between arrivals: exponential (default) or equal",
    )
    parser.add_argument(
        "--fractions", type=float, nargs="+", help="fractions of the maximum to run at"
    )
    parser.add_argument(
        "--goal-seconds",
        type=float,
        help=f"run the {GOAL_FRACTION * 100:.0f}%% point this long (sustained load; the pool of "
        f"batches grows to hold it, up to {SUSTAINED_RATE:,} batches/s)",
    )
    parser.add_argument("--no-plot", action="store_true", help="write the JSON only")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    if args.fractions:
        if any(not 0 < f <= 2 for f in args.fractions):
            parser.error("--fractions must be in (0, 2]")
        mode = Mode(**{**mode.__dict__, "fractions": tuple(sorted(args.fractions))})
    if args.goal_seconds is not None:
        if args.goal_seconds <= 0:
            parser.error("--goal-seconds must be positive")
        mode = sustained(mode, args.goal_seconds)
    swept = args.only or list(HTTP_SYSTEMS)
    name = "latency_quick" if args.quick else "latency"
    if args.goal_seconds is not None:  # a check of its own: not the curve the README draws
        name = "latency_sustained"
    ctx = results.context()
    started = time.monotonic()
    cores = ctx["usable_cores"]
    print(f"latency_bench  {ctx['date']}  commit {ctx['commit']}  on {ctx['host']}")
    print(f"cores: {cores}; load average {ctx['load_average_1_5_min']} (1, 5 min)")
    print(f"machine speed: {results.describe_speed(ctx['speed_at_start'])}")

    # The progress bar's estimate of the whole run.
    per_point = (mode.min_seconds + mode.cap_seconds) / 2 + STARTUP_S
    estimate = 3 * (mode.max_seconds + STARTUP_S) + len(swept) * len(mode.fractions) * per_point
    maxima: dict[str, Phase] = {}
    sweeps: dict[str, list[tuple[float, Phase]]] = {k: [] for k in swept}
    with bench_database("latency-bench-") as db:
        print(
            f"PostgreSQL {db.version} (embedded), fsync={db.fsync}, "
            f"synchronous_commit={db.synchronous_commit}"
        )
        t = time.perf_counter()
        work = Workload(build_bodies(mode.sessions, mode.batches, EVENTS), WARM, EVENTS)
        work.pickled(db.tmp)
        work.requests(db.token)
        work.bodies = []  # the pickle and the requests are all that is needed now
        print(
            f"workload: {mode.sessions} sessions, a pool of {mode.batches} batches each x "
            f"{EVENTS} events (~300 B payloads), built in {time.perf_counter() - t:.1f}s; "
            f"arrivals: {args.arrivals}"
        )
        with Progress("latency", estimate) as bar:
            for kind in SYSTEMS:
                with bar.step(f"maximum of {kind} (closed loop)", mode.max_seconds + STARTUP_S):
                    p = attempt(kind, partial(measure, db, kind, work, mode.max_seconds))
                maxima[kind] = p
                bar.note(
                    f"maximum, closed loop, {kind}: {p.events_per_s:,.0f} events/s "
                    f"(p50 {p.percentile(0.5):.1f} ms, p99 {p.percentile(0.99):.1f} ms; "
                    f"{p.stored.split(': ', 1)[1]})"
                )
            for kind in swept:
                top = maxima[kind].batches_per_s
                if not top:
                    bar.note(f"{kind}: no maximum measured, no sweep")
                    continue
                for i, fraction in enumerate(mode.fractions):
                    rate = top * fraction
                    seconds = point_seconds(mode, fraction, rate)
                    label = f"{kind} at {fraction:.0%} ({rate * EVENTS:,.0f} events/s)"
                    with bar.step(label, seconds + STARTUP_S):
                        run = partial(
                            open_point, db, kind, work, rate, seconds, args.arrivals, i + 1
                        )
                        p = attempt(label, run)
                    sweeps[kind].append((fraction, p))
                    bar.note(f"{kind:12s} {row(fraction, p, cores)}")
        work.drop()

    print()
    print("batch latency in ms, from the scheduled arrival; lag99 = the generator's own")
    print("p99 lateness in ms; other = share of the cores taken by other processes")
    for kind in swept:
        print(f"\n{LABELS[kind]}")
        print(HEADER)
        print(row(None, maxima[kind], cores))
        for fraction, p in sweeps[kind]:
            print(row(fraction, p, cores))
    direct = maxima["direct"]
    print(f"\n{LABELS['direct']}: {direct.events_per_s:,.0f} events/s (closed loop)")
    problems = [p for p in [*maxima.values(), *(q for s in sweeps.values() for _, q in s)]]
    problems = [p for p in problems if not p.ok or p.first_error]
    for p in problems:
        print(f"FAILED: {p.stored}" + (f"; first error: {p.first_error}" if p.first_error else ""))
    lags = [p.percentile(0.99, p.lags) for s in sweeps.values() for _, p in s if p.lags]
    if lags and max(lags) > 5.0:
        print(
            f"WARNING: the generator's p99 lateness reached {max(lags):.1f} ms: "
            "at those points the load generator, not only the server, was slow"
        )
    goal = goal_verdict(sweeps.get("ours", []))
    if goal is not None:
        print(
            f"goal: ours' p99 <= {GOAL_P99_MS:.0f} ms at {GOAL_FRACTION:.0%} of its maximum: "
            f"{'met' if goal['met'] else 'NOT met'} ({goal['p99_ms']:.1f} ms at "
            f"{goal['offered_events_per_s']:,} events/s; the point moves with this run's "
            "maximum: compare that rate with earlier runs)"
        )
    if args.quick:
        print("(--quick: short windows, few samples: figures are indicative only)")
    wall = time.monotonic() - started
    print(f"wall time {wall:.0f}s")

    figures: dict[str, Any] = {
        "workload": {
            "sessions": mode.sessions,
            "events_per_batch": EVENTS,
            "payload_bytes": 300,
            "warm_batches_per_session": WARM,
            "arrivals": args.arrivals,
            "quick": bool(args.quick),
            "goal_point_seconds": args.goal_seconds,
        },
        "postgres": {"version": db.version, "fsync": db.fsync},
        "maximum": {k: p.summary() for k, p in maxima.items()},
        "sweep": {
            k: [{"fraction": f, **p.summary()} for f, p in points] for k, points in sweeps.items()
        },
        "goal": goal,
        "ratios": {
            "ours_over_conventional": ratio(maxima, "ours", "conventional"),
            "ours_over_direct": ratio(maxima, "ours", "direct"),
        },
        "wall_seconds": round(wall),
    }
    path = results.save(name, ctx, figures)
    print(f"figures: {path.relative_to(ROOT)}")
    after = json.loads(path.read_text())["context"]["speed_at_end"]
    print(f"machine speed after: {results.describe_speed(after)}")
    if not args.no_plot and args.goal_seconds is None:
        import plots

        for png in plots.plot_latency(name):
            print(f"plot: {png.relative_to(ROOT)}")
    return 1 if problems else 0


def ratio(maxima: dict[str, Phase], a: str, b: str) -> float | None:
    if a in maxima and b in maxima and maxima[b].events_per_s:
        return round(maxima[a].events_per_s / maxima[b].events_per_s, 3)
    return None


def goal_verdict(points: list[tuple[float, Phase]]) -> dict[str, Any] | None:
    for fraction, p in points:
        if math.isclose(fraction, GOAL_FRACTION):
            p99 = p.percentile(0.99)
            return {
                "fraction": fraction,
                "offered_events_per_s": round(p.offered_events_per_s),
                "p99_ms": round(p99, 3),
                "target_p99_ms": GOAL_P99_MS,
                "met": p99 <= GOAL_P99_MS and p.ok and not p.first_error,
            }
    return None


if __name__ == "__main__":
    sys.exit(main())
