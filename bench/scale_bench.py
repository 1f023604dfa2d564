"""Scale curves: the maximum events/s against sessions, batch size and payload size.

Run on purpose (not a test):

    .venv/bin/python bench/scale_bench.py                  # ~9 min, all three curves
    .venv/bin/python bench/scale_bench.py --curve batch    # one curve
    .venv/bin/python bench/scale_bench.py --quick          # ~1 min, few points

Each point is a closed-loop maximum as in bench/ingest_bench.py (one keep-alive
connection per session, each session's batches in order, one warm-up batch per
session, then a timed window that ends after a fixed time or when the batches run
out), measured for ours (`serve --workers 2`), the peer (FastAPI + uvicorn
--workers 2 + asyncpg, bench/baseline_app.py) and the database limit (the same
commits straight through asyncpg, 8 writers, bench/direct_asyncpg.py) on the same
bodies, each on an emptied database and a fresh server, stored rows counted.

- sessions: 1 ... 1,024 sessions of 100-event batches, ~300 B payloads;
- batch: 1 ... 1,000 events per batch, 64 sessions, ~300 B payloads;
- payload: ~300 B ... 64 KiB payloads, 100-event batches, 16 sessions (64 KiB
  payloads make 6.6 MB bodies: 16 sessions keep the pre-built bodies in memory).

The bodies of a point are built for ours' rate; the database limit, faster, may
use them up before its window ends: its window is then shorter (in the JSON).
Figures go to bench/results/scale.json, plots to docs/bench/scale_<curve>.png
(with --quick: scale_quick.* in bench/results/).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import results
from loadgen import Phase
from processes import ROOT
from progress import Progress
from systems import (
    LABELS,
    PHASE_NAMES,
    SYSTEMS,
    Workload,
    attempt,
    bench_database,
    measure,
    raise_fd_limit,
)
from workload import DEFAULT_PAYLOAD, build_bodies

WARM = 1
STARTUP_S = 4.0  # per system and point: server start, connections, warm-up
MAX_BODY_BYTES = 600 * 1024 * 1024  # pre-built bodies of one point, at most
BUILD_EVENTS_PER_S = 40_000  # for the progress bar's estimate


@dataclass(frozen=True)
class Point:
    sessions: int
    events: int
    payload: int

    def estimate(self) -> float:
        """A generous guess at the fastest server's batches/s at this point, to size
        the pre-built bodies: a session's round trip, per-batch CPU, events, bytes."""
        return min(
            self.sessions * 500,
            2500,
            100_000 / self.events,
            250e6 / (self.events * max(self.payload, DEFAULT_PAYLOAD)),
        )

    def batches(self, seconds: float) -> int:
        """Batches per session, warm-up included, for a window of `seconds`."""
        body = self.events * (self.payload + 250)
        need = WARM + math.ceil(self.estimate() * seconds * 1.2 / self.sessions) + 1
        fits = MAX_BODY_BYTES // (body * self.sessions)
        return max(WARM + 2, min(need, fits))


@dataclass(frozen=True)
class Curve:
    key: str
    title: str
    xs: tuple[int, ...]
    sessions: int = 64
    events: int = 100
    payload: int = DEFAULT_PAYLOAD

    def point(self, x: int) -> Point:
        if self.key == "sessions":
            return Point(x, self.events, self.payload)
        if self.key == "batch":
            return Point(self.sessions, x, self.payload)
        return Point(self.sessions, self.events, x)


FULL_CURVES = (
    Curve("sessions", "sessions", (1, 4, 16, 64, 256, 1024)),
    Curve("batch", "events per batch", (1, 3, 10, 30, 100, 300, 1000)),
    Curve("payload", "payload size (bytes)", (300, 1024, 4096, 16384, 65536), sessions=16),
)
QUICK_CURVES = (
    Curve("sessions", "sessions", (4, 64)),
    Curve("batch", "events per batch", (10, 100)),
    Curve("payload", "payload size (bytes)", (4096,), sessions=16),
)
FULL_SECONDS, QUICK_SECONDS = 4.0, 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few points, 1-second windows")
    parser.add_argument(
        "--curve",
        action="append",
        choices=[c.key for c in FULL_CURVES],
        help="run only these curves (repeatable)",
    )
    parser.add_argument(
        "--only", action="append", choices=SYSTEMS, help="measure only these systems"
    )
    parser.add_argument("--seconds", type=float, help="timed window per measurement")
    parser.add_argument("--no-plot", action="store_true", help="write the JSON only")
    args = parser.parse_args()
    curves = [
        c for c in (QUICK_CURVES if args.quick else FULL_CURVES) if c.key in (args.curve or [c.key])
    ]
    seconds: float = args.seconds or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    systems = [k for k in SYSTEMS if k in (args.only or SYSTEMS)]
    name = "scale_quick" if args.quick else "scale"
    ctx = results.context()
    started = time.monotonic()
    cores = ctx["usable_cores"]
    print(f"scale_bench  {ctx['date']}  commit {ctx['commit']}  on {ctx['host']}")
    print(f"cores: {cores}; load average {ctx['load_average_1_5_min']} (1, 5 min)")
    print(f"machine speed: {results.describe_speed(ctx['speed_at_start'])}")

    points: dict[Point, int] = {}  # each distinct point once, in curve order
    for c in curves:
        for x in c.xs:
            points.setdefault(c.point(x), 0)
    estimate = 0.0
    for pt in points:
        events = pt.sessions * pt.batches(seconds) * pt.events
        estimate += events * max(pt.payload, DEFAULT_PAYLOAD) / DEFAULT_PAYLOAD / BUILD_EVENTS_PER_S
        estimate += len(systems) * (seconds + STARTUP_S)
    raise_fd_limit(4 * max(p.sessions for p in points) + 256)
    measured: dict[Point, dict[str, Any]] = {}
    failed: list[Phase] = []
    with bench_database("scale-bench-") as db, Progress("scale", estimate) as bar:
        bar.note(
            f"PostgreSQL {db.version} (embedded), fsync={db.fsync}, "
            f"synchronous_commit={db.synchronous_commit}; {len(points)} points x "
            f"{len(systems)} systems, windows <= {seconds:g}s"
        )
        for i, pt in enumerate(points):
            batches = pt.batches(seconds)
            label = f"{pt.sessions} sessions x {pt.events} events x {pt.payload} B"
            build_s = (
                (pt.sessions * batches * pt.events * max(pt.payload, DEFAULT_PAYLOAD))
                / DEFAULT_PAYLOAD
                / BUILD_EVENTS_PER_S
            )
            with bar.step(f"building {label}", build_s):
                t = time.perf_counter()
                bodies = build_bodies(pt.sessions, batches, pt.events, pt.payload, seed=100 + i)
                body_bytes = sum(len(b) for s in bodies for b in s) / (pt.sessions * batches)
                work = Workload(bodies, WARM, pt.events)
                work.pickled(db.tmp)
                work.requests(db.token)
                work.bodies = []
                built = time.perf_counter() - t
            entry: dict[str, Any] = {
                "sessions": pt.sessions,
                "events": pt.events,
                "payload_bytes": pt.payload,
                "body_bytes": round(body_bytes),
                "batches_per_session": batches,
                "built_s": round(built, 1),
            }
            parts = []
            for kind in systems:
                with bar.step(f"{label}: {kind}", seconds + STARTUP_S):
                    p = attempt(
                        PHASE_NAMES.get(kind, kind), partial(measure, db, kind, work, seconds)
                    )
                entry[kind] = p.summary()
                if not p.ok or p.first_error:
                    failed.append(p)
                retried = sum(p.retried.values())
                parts.append(
                    f"{kind} {p.events_per_s:9,.0f}"
                    + (f" ({retried} retried)" if retried else "")
                    + ("" if p.ok and not p.first_error else " FAILED")
                )
            work.drop()
            measured[pt] = entry
            other = max(
                (
                    e["cpu_s"]["other"] / (e["cpu_s"]["metered_s"] * cores)
                    for k, e in entry.items()
                    if k in systems and e["cpu_s"]["metered_s"]
                ),
                default=0.0,
            )
            bar.note(
                f"{label:>34s} ({body_bytes / 1024:,.0f} KiB bodies): "
                + ", ".join(parts)
                + f" events/s; other processes up to {other:.0%}"
            )

    figures: dict[str, Any] = {
        "workload": {"warm_batches_per_session": WARM, "window_s": seconds, "quick": args.quick},
        "postgres": {"version": db.version, "fsync": db.fsync},
        "curves": {},
    }
    print()
    for c in curves:
        rows = []
        print(f"events/s vs {c.title}  (x peer, x database limit)")
        for x in c.xs:
            entry = measured[c.point(x)]
            rows.append({"x": x, **entry})
            cells = []
            for kind in systems:
                cells.append(f"{entry[kind]['events_per_s']:>9,.0f}")
            ratios = [ratio(entry, "ours", k) for k in ("conventional", "direct")]
            print(
                f"  {x:>6,}  "
                + "  ".join(f"{k} {v}" for k, v in zip(systems, cells, strict=True))
                + "  "
                + "  ".join(f"x{r:.2f}" if r is not None else "   -" for r in ratios)
            )
        figures["curves"][c.key] = {
            "title": c.title,
            "fixed": {"sessions": c.sessions, "events": c.events, "payload_bytes": c.payload},
            "points": rows,
        }
    for p in failed:
        print(f"FAILED: {p.stored}" + (f"; first error: {p.first_error}" if p.first_error else ""))
    if args.quick:
        print("(--quick: 1-second windows: figures are indicative only)")
    wall = time.monotonic() - started
    print(f"wall time {wall:.0f}s")
    figures["wall_seconds"] = round(wall)
    figures["labels"] = LABELS
    path = results.save(name, ctx, figures)
    print(f"figures: {path.relative_to(ROOT)}")
    if not args.no_plot:
        import plots

        for png in plots.plot_scale(name):
            print(f"plot: {png.relative_to(ROOT)}")
    return 1 if failed else 0


def ratio(entry: dict[str, Any], a: str, b: str) -> float | None:
    if a in entry and b in entry and entry[b]["events_per_s"]:
        return float(entry[a]["events_per_s"] / entry[b]["events_per_s"])
    return None


if __name__ == "__main__":
    sys.exit(main())
