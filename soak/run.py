"""`make soak`: the fault soak of `serve --workers 2` (see the package docstring).

    python -m soak [--minutes 8] [--quick] [--writers 8] [--kills 100] [--db-faults 20]

Starts its own embedded PostgreSQL and server in a temp dir, on loopback; drives
the writers; injects one fault at a time and waits for the service to recover
by itself; then drains the writers, runs the independent checker, prints the
figures, writes them to bench/results/soak.json, and exits 0 only if every check
holds. Every process it started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import checker, cluster
from .cluster import Cluster
from .ledger import Ledger
from .writers import Control, Writer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "soak.json"

KILLS = ("kill:worker", "kill:worker", "kill:worker", "kill:server", "kill:server")
DB_FAULTS = (
    "db:terminate",
    "db:freeze",
    "db:restart-fast",
    "db:restart-immediate",
    "db:kill-postmaster",
)
RECOVERY_TIMEOUT = 60.0  # past this, the service did not recover by itself
WINDOW_SLACK = 1.0  # an answer this soon after recovery still belongs to the fault


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0  # the fault is over (killed, database back, thawed)
    ready_at: float = 0.0  # /readyz 200 on every worker again
    acked_at: float = 0.0  # a writer's batch acknowledged again
    detail: str = ""
    manual: str = ""  # what the harness had to do by hand for the service to recover

    @property
    def recovered(self) -> float:
        return max(self.ready_at, self.acked_at)

    @property
    def recovery_s(self) -> float:
        return self.recovered - self.ended


@dataclass
class Figures:
    faults: list[Fault] = field(default_factory=list)
    serve_restarts: int = 0  # by the harness after it SIGKILLed the whole server
    manual_steps: int = 0
    pg_restarts: int = 0
    failures: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--minutes",
        type=float,
        default=12.0,
        help="the fault phase ends once both targets are met, or after this long",
    )
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run, small targets")
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--kills", type=int, default=100, help="SIGKILLs required (worker/server)")
    p.add_argument("--db-faults", type=int, default=20, help="database faults required")
    p.add_argument("--db-deadline", type=float, default=2.0, help="CHAIN_DB_DEADLINE")
    p.add_argument("--max-batch", type=int, default=20, help="events per batch, at most")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--replay-sample", type=int, default=200, help="sessions replayed over HTTP")
    p.add_argument(
        "--root", type=Path, default=ROOT, help="where `python -m service` runs (a patched copy)"
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated fault kinds to use (e.g. db:terminate,kill:worker); default all",
    )
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, 1.5)
        args.kills = min(args.kills, 8)
        args.db_faults = min(args.db_faults, 5)
        args.writers = min(args.writers, 4)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    only = {k for k in args.only.split(",") if k}
    unknown = only - set(KILLS) - set(DB_FAULTS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {sorted({*KILLS, *DB_FAULTS})}")
    args.kill_kinds = [k for k in KILLS if not only or k in only]
    args.db_kinds = [k for k in DB_FAULTS if not only or k in only]
    if not args.kill_kinds:
        args.kills = 0
    if not args.db_kinds:
        args.db_faults = 0
    return args


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        env = {
            **os.environ,
            "CHAIN_DB_DEADLINE": str(args.db_deadline),
            "SEAL_KEY_FILE": str(tmp / "seal_key.pem"),
            "LOG_LEVEL": "WARNING",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.cluster = Cluster(args.root.resolve(), tmp, workers=2, env=env)
        self.ledger = Ledger()
        self.control = Control()
        self.fig = Figures()
        self.token = ""
        self.dsn = ""
        self.writers: list[Writer] = []

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # ---- recovery ------------------------------------------------------------------

    async def ready(self, killed: int | None = None) -> bool:
        """Every worker is up (none of them the one just killed) and /readyz is 200
        on several fresh connections in a row."""
        c = self.cluster
        pids = await asyncio.to_thread(c.worker_pids)
        if len(pids) != c.workers or killed in pids:
            return False
        return await asyncio.to_thread(c.ready_streak, 4)

    async def wait_recovered(self, fault: Fault, killed: int | None = None) -> None:
        """Until the service serves again on its own; if it does not, do what an
        operator would (restart it) and record that as a manual step."""
        c = self.cluster
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            status = c.serve_exited()
            if status is not None:
                self.manual(fault, f"serve exited by itself (status {status}); restarted it")
                await asyncio.to_thread(c.start_serve)
                killed = None
            elif not fault.ready_at and await self.ready(killed):
                fault.ready_at = time.monotonic()
            if fault.ready_at and self.ledger.last_ack_at > fault.ended:
                fault.acked_at = self.ledger.last_ack_at
                return
            if time.monotonic() > deadline:
                if "not recovered" in fault.manual:
                    raise RuntimeError(f"no recovery after {fault.kind}, even after a restart")
                self.manual(
                    fault,
                    f"not recovered in {RECOVERY_TIMEOUT:.0f}s ({await self.diagnose()}); "
                    "restarted all",
                )
                await asyncio.to_thread(c.thaw_pg)
                await asyncio.to_thread(c.stop_serve)
                await asyncio.to_thread(c.start_pg)
                await asyncio.to_thread(c.start_serve)
                deadline = time.monotonic() + RECOVERY_TIMEOUT
                killed = None
            await asyncio.sleep(0.1)

    async def diagnose(self) -> str:
        """What the service and the writers are doing, when it does not recover."""
        c = self.cluster
        pids = await asyncio.to_thread(c.worker_pids)
        probes = [await asyncio.to_thread(cluster.http_status, c.port, "/readyz") for _ in range(8)]
        now = time.monotonic()
        writers = Counter(f"{w.state.split(' ')[0]} for {now - w.since:.0f}s" for w in self.writers)
        return (
            f"workers {pids}, /readyz x8: {probes}, last ack {now - self.ledger.last_ack_at:.0f}s "
            f"ago, writers: {dict(writers)}, PostgreSQL running: {c.pg.running()}"
        )

    def manual(self, fault: Fault, what: str) -> None:
        self.fig.manual_steps += 1
        fault.manual = f"{fault.manual}; {what}" if fault.manual else what
        self.say(f"  MANUAL STEP after {fault.kind}: {what}")

    # ---- faults ----------------------------------------------------------------------

    async def inject(self, kind: str) -> Fault:
        c = self.cluster
        fault = Fault(kind, time.monotonic())
        killed: int | None = None
        if kind == "kill:worker":
            pids = await asyncio.to_thread(c.worker_pids)
            if not pids:
                raise RuntimeError("no worker to kill")
            killed = self.rng.choice(pids)
            c.kill_worker(killed)
            fault.detail = f"worker {killed} of {pids}"
        elif kind == "kill:server":
            pid = c.serve.pid if c.serve else None
            await asyncio.to_thread(c.kill_serve)
            orphans = await asyncio.to_thread(c.group_alive, 5.0)
            if orphans:
                self.fig.failures.append(f"processes survived a kill of the serve group: {orphans}")
            await asyncio.to_thread(c.start_serve)
            self.fig.serve_restarts += 1
            fault.detail = f"serve group {pid}"
        elif kind == "db:terminate":
            n = await c.terminate_backends()
            fault.detail = f"{n} backends terminated"
        elif kind == "db:freeze":
            n = await asyncio.to_thread(c.freeze_pg)
            await asyncio.sleep(self.args.db_deadline + 1.5)
            await asyncio.to_thread(c.thaw_pg)
            fault.detail = f"{n} processes stopped for {self.args.db_deadline + 1.5:.1f}s"
        else:
            if kind == "db:kill-postmaster":
                await asyncio.to_thread(c.kill_pg)
            else:
                await asyncio.to_thread(c.stop_pg, kind.removeprefix("db:restart-"))
            down = self.rng.uniform(0.5, 2.0)
            await asyncio.sleep(down)
            await asyncio.to_thread(c.start_pg)
            self.fig.pg_restarts += 1
            fault.detail = f"down {down:.1f}s"
        fault.ended = time.monotonic()
        await self.wait_recovered(fault, killed)
        self.fig.faults.append(fault)
        return fault

    async def steady(self) -> None:
        """Between faults: writers make progress for a moment."""
        acks = self.ledger.acks
        start = time.monotonic()
        while self.ledger.acks < acks + 5 or time.monotonic() < start + 0.3:
            if time.monotonic() > start + 30:
                self.fig.failures.append("no batch acknowledged for 30 s between faults")
                return
            await asyncio.sleep(0.05)

    async def faults(self) -> None:
        end = time.monotonic() + self.args.minutes * 60
        n_db = n_kill = 0
        a = self.args
        while time.monotonic() < end and (n_kill < a.kills or n_db < a.db_faults):
            await self.steady()
            # Whichever is further behind its target; database faults in turn.
            if a.db_kinds and (
                not a.kill_kinds or n_db / max(1, a.db_faults) < n_kill / max(1, a.kills)
            ):
                kind = a.db_kinds[n_db % len(a.db_kinds)]
                n_db += 1
            else:
                kind = self.rng.choice(a.kill_kinds)
                n_kill += 1
            fault = await self.inject(kind)
            self.say(
                f"{len(self.fig.faults):4d} {kind:22s} {fault.detail:32s} recovered in "
                f"{fault.recovery_s:5.2f}s  acked {self.ledger.acks}"
                + (f"  [{fault.manual}]" if fault.manual else "")
            )

    # ---- the run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        a, c = self.args, self.cluster
        self.say(f"soak: temp dir {c.tmp}, seed {a.seed}, {a.writers} writers, {a.minutes} min")
        self.dsn = await asyncio.to_thread(c.start_pg)
        self.token = await asyncio.to_thread(
            c.service, "keys", "create", "--tenant", "soak", "--scope", "ingest", "--scope", "read"
        )
        await asyncio.to_thread(c.start_serve)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while not await self.ready():
            if c.serve_exited() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start:\n{c.logs[-1].read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        writers = self.writers = [
            Writer(
                i,
                c.url,
                self.token,
                self.ledger,
                self.control,
                seed=a.seed + i,
                max_batch=a.max_batch,
                max_batches_per_session=30,
            )
            for i in range(a.writers)
        ]
        tasks = [asyncio.create_task(w.run()) for w in writers]
        started = time.monotonic()
        try:
            self.say(f"serving on {c.url}; faults begin")
            await self.faults()
            self.say("faults over; draining writers")
        except asyncio.CancelledError:
            self.control.abandon = True
            raise
        except Exception as exc:
            self.fig.failures.append(f"the run was aborted: {exc!r}")
            self.say(f"ABORTED: {exc!r}")
        finally:
            self.control.draining = True
            done, pending = await asyncio.wait(tasks, timeout=0 if self.control.abandon else 90)
            self.control.abandon = True
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    self.fig.failures.append(f"a writer crashed: {t.exception()!r}")
        elapsed = time.monotonic() - started
        if pending:
            self.fig.failures.append(f"{len(pending)} writers did not finish their batch in 90 s")
        self.say("checking")
        found = await checker.check(
            self.dsn, c.url, self.token, self.ledger, replay_sample=a.replay_sample
        )
        return self.report(found, elapsed)

    # ---- figures ----------------------------------------------------------------------

    def report(self, found: checker.Findings, elapsed: float) -> dict[str, Any]:
        a, fig, ledger = self.args, self.fig, self.ledger
        kinds = Counter(f.kind for f in fig.faults)
        kills = sum(n for k, n in kinds.items() if k.startswith("kill:"))
        db_faults = sum(n for k, n in kinds.items() if k.startswith("db:"))
        windows = [(f.started, f.recovered + WINDOW_SLACK) for f in fig.faults]
        during: Counter[str] = Counter()
        outside: Counter[str] = Counter()
        outside_examples: list[str] = []
        t0 = fig.faults[0].started if fig.faults else 0.0
        for ans in ledger.answers:
            inside = any(ans.answered_at >= s and ans.sent_at <= e for s, e in windows)
            label = ans.what if not ans.code else f"{ans.what} {ans.code}"
            (during if inside else outside)[label] += 1
            if not inside and len(outside_examples) < 20:
                outside_examples.append(
                    f"{label} sent at {ans.sent_at - t0:.2f}s, answered at "
                    f"{ans.answered_at - t0:.2f}s, writer {ans.writer}"
                )
        allowed = {"429 overloaded", "503 unavailable"}
        bad = {k: n for k, n in (during + outside).items() if k not in allowed and "conn:" not in k}
        if bad:
            fig.failures.append(f"answers other than 503/429/connection errors: {bad}")
        if kills < a.kills:
            fig.failures.append(f"only {kills} kills, {a.kills} required")
        if db_faults < a.db_faults:
            fig.failures.append(f"only {db_faults} database faults, {a.db_faults} required")
        if fig.manual_steps:
            fig.failures.append(f"{fig.manual_steps} recoveries needed a manual step")
        for v in ledger.violations[:20]:
            fig.failures.append(f"writer saw: {v}")
        if not found.ok:
            fig.failures.append("the checker found problems (see checker.problems)")
        logs = self.log_findings()

        def recovery(kind_prefix: str) -> dict[str, float]:
            times = [f.recovery_s for f in fig.faults if f.kind.startswith(kind_prefix)]
            if not times:
                return {}
            return {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }

        out: dict[str, Any] = {
            "ok": not fig.failures,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "settings": {
                "minutes": a.minutes,
                "writers": a.writers,
                "workers": 2,
                "db_deadline_s": a.db_deadline,
                "max_batch": a.max_batch,
                "seed": a.seed,
                "quick": a.quick,
            },
            "elapsed_s": round(elapsed, 1),
            "kills": {k.removeprefix("kill:"): n for k, n in kinds.items() if k.startswith("kill:")}
            | {"total": kills},
            "restarts": {
                "serve_by_harness_after_kill": fig.serve_restarts,
                "postgres": fig.pg_restarts,
                "manual": fig.manual_steps,
            },
            "db_faults": {k.removeprefix("db:"): n for k, n in kinds.items() if k.startswith("db:")}
            | {"total": db_faults},
            "requests": ledger.requests,
            "sessions": len(ledger.sessions),
            "acknowledged_batches": found.batches_acknowledged,
            "acknowledged_events": found.events_acknowledged,
            "acknowledged_by_duplicate": found.acknowledged_duplicate,
            "stored_despite_503": self.stored_despite_503(),
            "lost_batches": found.lost_batches,
            "partial_batches": found.partial_batches,
            "unacknowledged_stored_whole": found.unacknowledged_stored,
            "unacknowledged_absent": found.unacknowledged_absent,
            "stored": {
                "sessions": found.sessions_stored,
                "events": found.events_stored,
                "seals": found.seals_stored,
                "chain_failures": found.chain_failures,
                "replay_checked": found.replay_checked,
                "replay_mismatches": found.replay_mismatches,
            },
            "answers_during_faults": dict(during.most_common()),
            "answers_outside_faults": dict(outside.most_common()),
            "answers_outside_faults_examples": outside_examples,
            "recovery": {
                "all": recovery(""),
                "kill:worker": recovery("kill:worker"),
                "kill:server": recovery("kill:server"),
                "db": recovery("db:"),
                **{k: recovery(k) for k in DB_FAULTS},
            },
            "server_logs": logs,
            "failures": fig.failures,
            "checker_problems": found.problems,
            "faults": [
                {
                    **{k: v for k, v in asdict(f).items() if k in ("kind", "detail", "manual")},
                    "at_s": round(f.started - fig.faults[0].started, 2),
                    "recovery_s": round(f.recovery_s, 3),
                }
                for f in fig.faults
            ],
        }
        return out

    def stored_despite_503(self) -> dict[str, int]:
        """Batches answered 503 ("nothing was stored") on every failed attempt, yet
        acknowledged as a duplicate: a 503 whose batch had in fact been stored; by
        the fault during which the first 503 came."""
        out: Counter[str] = Counter()
        for s in self.ledger.sessions:
            for b in s.batches:
                if b.acked and b.duplicate and b.failures and set(b.failures) <= {"503", "429"}:
                    out[self.fault_at(b.failed_at[0])] += 1
        return dict(out)

    def fault_at(self, t: float) -> str:
        for f in self.fig.faults:
            if f.started <= t <= f.recovered + WINDOW_SLACK:
                return f.kind
        return "none"

    def log_findings(self) -> dict[str, Any]:
        errors: list[str] = []
        n = 0
        for log in self.cluster.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if '"level":"error"' in line or line.startswith("Traceback"):
                        n += 1
                        if len(errors) < 5:
                            errors.append(line[:400])
        return {"error_lines": n, "first": errors}


def print_figures(r: dict[str, Any]) -> None:
    rec = r["recovery"]

    def fmt(d: dict[str, float]) -> str:
        return f"median {d['median_s']:.2f}s, max {d['max_s']:.2f}s" if d else "-"

    lines = [
        "",
        f"== soak: {'PASS' if r['ok'] else 'FAIL'} "
        f"({r['elapsed_s']:.0f}s, seed {r['settings']['seed']})",
        f"kills            {r['kills']}",
        f"database faults  {r['db_faults']}",
        f"restarts         {r['restarts']}",
        f"requests         {r['requests']} over {r['sessions']} sessions",
        f"acknowledged     {r['acknowledged_batches']} batches, {r['acknowledged_events']} events"
        f" ({r['acknowledged_by_duplicate']} by a duplicate answer after a lost ack)",
        f"lost batches     {r['lost_batches']}",
        f"partial batches  {r['partial_batches']}",
        f"unacknowledged   {r['unacknowledged_stored_whole']} stored whole, "
        f"{r['unacknowledged_absent']} absent",
        f"stored           {r['stored']}",
        f"during faults    {r['answers_during_faults']}",
        f"outside faults   {r['answers_outside_faults']}",
        f"503, yet stored  {r['stored_despite_503']} (batches answered only 503, then duplicate)",
        f"recovery         all: {fmt(rec['all'])}",
        f"                 worker kill: {fmt(rec['kill:worker'])}; "
        f"server kill: {fmt(rec['kill:server'])}; database: {fmt(rec['db'])}",
        f"server logs      {r['server_logs']['error_lines']} error lines",
    ]
    lines += [f"FAILURE: {f}" for f in r["failures"]]
    lines += [f"  checker: {p}" for p in r["checker_problems"]]
    print("\n".join(lines), flush=True)


async def amain(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    soak = Soak(args, tmp)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        result = await soak.run()
    finally:
        # Blocking on purpose: nothing may be left running, even when cancelled.
        soak.cluster.shutdown()
    leftovers = soak.cluster.leftovers()
    if leftovers:
        result["failures"].append(f"processes left running: {leftovers}")
        result["ok"] = False
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    result: dict[str, Any] | None = None
    try:
        result = asyncio.run(amain(args, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything stopped", file=sys.stderr)
    finally:
        keep = args.keep or result is None or not result["ok"]
        if keep:
            print(f"logs and data kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if result is None:
        sys.exit(2)
    print_figures(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures written to {args.json}")
    sys.exit(0 if result["ok"] else 1)
