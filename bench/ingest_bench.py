"""End-to-end ingest throughput: 64 sessions x 100-event batches, three ways, one run.

Run on purpose (not a test):

    .venv/bin/python bench/ingest_bench.py [--quick]

On a fresh embedded PostgreSQL in a temp dir (fsync on), with the same
pre-built chained events (payloads ~300 B of JSON), it measures in turn:

1. direct asyncpg: the service's commit transactions from plain asyncio, rows
   built before timing, 8 writers (bench/direct_asyncpg.py, own process);
2. conventional: FastAPI + uvicorn --workers 2 + asyncpg, hashing in Python
   (bench/baseline_app.py);
3. ours: `python -m service serve --workers 2`.

The load generator is this process: raw trio sockets, pre-encoded HTTP/1.1
requests, one keep-alive connection and task per session sending its batches
in order, spread evenly over the server's worker processes. Each phase warms
up, runs for a fixed time (or until the batches run out), then checks that
every acknowledged event and seal is stored. Besides rates and latencies it
reports where the cores' time went (load generator, server, PostgreSQL, other
processes, idle), CPU per batch, and WAL per batch: the machine is shared, and
the "other" column says how much a run was disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pickle
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
import psutil
import trio

import hashcore
from service.storage.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = sys.executable
T = TypeVar("T")

SESSIONS = 64
EVENTS = 100
DIRECT_WRITERS = 8
WARM_BATCHES = 2
CONNECT_GAP = 0.002  # seconds between two sessions' connects
ZERO = "0" * 64
TARGET = 50_000  # events/s for ours with --workers 2 (the target)


@dataclass(frozen=True)
class Mode:
    batches: int  # per session, warm-up included
    seconds: float  # timed window per phase, at most


FULL = Mode(batches=150, seconds=15.0)
QUICK = Mode(batches=20, seconds=4.0)


# --- the workload -----------------------------------------------------------------


def payload(rng: random.Random, seq: int) -> dict[str, Any]:
    """About 300 bytes of JSON, with nesting, numbers and non-ASCII text."""
    return {
        "tool": "search",
        "call_id": f"call-{seq:06d}",
        "args": {"query": "weather in Zürich tomorrow", "top_k": 5, "lang": "de"},
        "latency_ms": round(rng.uniform(1, 900), 3),
        "ok": True,
        "tokens": {"in": rng.randrange(10_000), "out": rng.randrange(10_000)},
        "note": "résumé ☃ " + "x" * rng.randrange(90, 110),
    }


def build_bodies(sessions: int, batches: int, seed: int = 7) -> list[list[bytes]]:
    """Request bodies of valid, chained events: per session, its batches in order."""
    rng = random.Random(seed)
    canonicalize, sha256_hex, dumps = hashcore.canonicalize, hashcore.sha256_hex, orjson.dumps
    out = []
    for _ in range(sessions):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prev, seq, bodies = ZERO, 0, []
        for _ in range(batches):
            events = []
            for _ in range(EVENTS):
                hms = f"{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}"
                ts = f"2026-11-27T{hms}.{seq:06d}Z"
                event = {
                    "session_id": sid,
                    "seq": seq,
                    "kind": "tool.result",
                    "ts": ts,
                    "payload": payload(rng, seq),
                    "prev_hash": prev,
                }
                event["hash"] = prev = sha256_hex(canonicalize(dumps(event)))
                events.append(event)
                seq += 1
            bodies.append(dumps({"events": events}))
        out.append(bodies)
    return out


def encode_requests(bodies: list[list[bytes]], token: str) -> list[list[bytes]]:
    head = (
        "POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    ).encode()
    return [[b"%sContent-Length: %d\r\n\r\n%s" % (head, len(b), b) for b in s] for s in bodies]


# --- results ------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    events: int = 0  # acknowledged, warm-up included
    batches: int = 0
    timed_events: int = 0
    timed_batches: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    retried: collections.Counter[int] = field(default_factory=collections.Counter)
    first_error: str = ""
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    pg_cpu: float = 0.0
    other_cpu: float = 0.0  # any other process on the machine
    idle_cpu: float = 0.0  # idle + iowait, summed over the cores
    workers: str = ""  # per worker process: connections held, CPU seconds
    wal_bytes: int = 0  # written during the phase, warm-up included
    spread_note: str = ""
    stored: str = ""
    ok: bool = True

    @property
    def events_per_s(self) -> float:
        return self.timed_events / self.seconds if self.seconds else 0.0

    @property
    def batches_per_s(self) -> float:
        return self.timed_batches / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")


# --- processes and CPU accounting ------------------------------------------------------


def cpu_seconds(roots: list[int]) -> dict[int, float]:
    """user+system CPU seconds of each process in the trees under `roots`."""
    out: dict[int, float] = {}
    for pid in roots:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[p.pid] = t.user + t.system
    return out


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def connection_owners(root: int, port: int) -> tuple[list[int], dict[int, int]]:
    """The server's worker processes (they listen on `port` and have no children), and
    for each accepted connection to `port`, client port -> the process holding it."""
    workers: list[int] = []
    owners: dict[int, int] = {}
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return workers, owners
    for p in procs:
        try:
            conns = p.net_connections("tcp")
            leaf = not p.children()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.laddr.port != port:
                continue
            if c.status == psutil.CONN_LISTEN and leaf and p.pid not in workers:
                workers.append(p.pid)
            elif c.status == psutil.CONN_ESTABLISHED and c.raddr:
                owners[c.raddr.port] = p.pid
    return workers, owners


class CpuMeter:
    """Where the cores' time went during a window: the load generator, the server's
    process tree, PostgreSQL, any other process, and idle (incl. iowait)."""

    def __init__(self, client: Callable[[], float], server_pid: int | None, pg_pid: int) -> None:
        self.client, self.server_pid, self.pg_pid = client, server_pid, pg_pid

    def _server(self) -> dict[int, float]:
        return cpu_seconds([self.server_pid]) if self.server_pid else {}

    def start(self) -> None:
        self.c0, self.s0, self.p0 = self.client(), self._server(), cpu_seconds([self.pg_pid])
        self.m0 = psutil.cpu_times()

    def stop(self, phase: Phase) -> dict[int, float]:
        """Fill the phase's CPU figures; return each server process's CPU seconds."""
        c1, s1, p1, m1 = (
            self.client(),
            self._server(),
            cpu_seconds([self.pg_pid]),
            psutil.cpu_times(),
        )
        phase.client_cpu = c1 - self.c0
        phase.server_cpu = cpu_spent(self.s0, s1)
        phase.pg_cpu = cpu_spent(self.p0, p1)
        idle = (m1.idle - self.m0.idle) + (m1.iowait - self.m0.iowait)
        # guest time is already counted in user; steal is time the host took away.
        fields = ("user", "nice", "system", "irq", "softirq", "steal")
        busy = sum(getattr(m1, f) - getattr(self.m0, f) for f in fields)
        phase.idle_cpu = idle
        phase.other_cpu = max(0.0, busy - phase.client_cpu - phase.server_cpu - phase.pg_cpu)
        return {pid: v - self.s0.get(pid, 0.0) for pid, v in s1.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(port: int, path: str) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            line = s.makefile("rb").readline()
        return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """A server's process tree, logging to a file, stopped by SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, port: int, path: str, timeout: float = 60.0) -> None:
        """Until `path` answers 200 on several fresh connections in a row (every worker)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < 8:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout:.0f}s:\n{self.tail()}")
            if http_status(port, path) == 200:
                streak += 1
            else:
                streak = 0
                time.sleep(0.1)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        # Workers it spawned share its process group (its own session).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


# --- the database, from plain asyncio (this process never imports trio_asyncio) -----


def with_conn(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def main() -> T:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


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
    return int(row[0]), int(row[1]), int(row[2])


def check_stored(dsn: str, phase: Phase) -> None:
    events, seals, heads = with_conn(dsn, stored_counts)
    phase.ok = events == phase.events and seals == phase.batches and heads == phase.events
    verdict = "nothing lost" if phase.ok else "MISMATCH"
    phase.stored = (
        f"{phase.name}: stored {events:,} events + {seals:,} seals (heads sum {heads:,}); "
        f"acknowledged {phase.events:,} events in {phase.batches:,} batches: {verdict}"
    )


# --- the HTTP load generator ----------------------------------------------------------


class HttpConnection:
    """HTTP/1.1 keep-alive over one trio stream: send a pre-encoded request, read
    the status line and Content-Length, skip the body (kept only for errors)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    async def request(self, data: bytes) -> tuple[int, bytes]:
        await self.stream.send_all(data)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(buf[:end]).lower()
        del buf[: end + 4]
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError(f"no Content-Length in response: {head[:200]!r}")
        eol = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : eol if eol >= 0 else len(head)])
        while len(buf) < length:
            await self._fill()
        body = bytes(buf[:length]) if status != 200 else b""
        del buf[:length]
        return status, body


class Window:
    """Releases all sessions together after their warm-up, and marks the timed window."""

    def __init__(self, parties: int, seconds: float, on_start: Callable[[], None]) -> None:
        self.waiting = parties
        self.seconds = seconds
        self.on_start = on_start
        self.started = trio.Event()
        self.t0 = self.deadline = self.t1 = 0.0

    def arrive(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.on_start()
            self.t0 = time.perf_counter()
            self.deadline = self.t0 + self.seconds
            self.started.set()


async def session_client(
    stream: trio.SocketStream, requests: list[bytes], window: Window, phase: Phase
) -> None:
    arrived = False
    try:
        async with stream:
            conn = HttpConnection(stream)
            for k, req in enumerate(requests):
                timed = k >= WARM_BATCHES
                if k == WARM_BATCHES:
                    arrived = True
                    window.arrive()
                    await window.started.wait()
                if timed and time.perf_counter() >= window.deadline:
                    return
                t = time.perf_counter()
                while True:
                    status, body = await conn.request(req)
                    phase.statuses[str(status)] += 1
                    if status not in (429, 503):
                        break
                    phase.retried[status] += 1
                    await trio.sleep(0.05)
                done = time.perf_counter()
                if status != 200:
                    # The rest of this session would only be seq_gap: stop it.
                    phase.first_error = phase.first_error or f"{status} {body[:300]!r}"
                    return
                phase.events += EVENTS
                phase.batches += 1
                if timed:
                    phase.latencies.append(done - t)
                    phase.timed_events += EVENTS
                    phase.timed_batches += 1
                    window.t1 = max(window.t1, done)
    except (OSError, EOFError, ValueError, trio.BrokenResourceError) as exc:
        phase.statuses["connection error"] += 1
        phase.first_error = phase.first_error or f"{type(exc).__name__}: {exc}"
    finally:
        if not arrived:
            window.arrive()


async def open_connections(
    port: int, n: int, server_pid: int
) -> tuple[list[trio.SocketStream], dict[int, int], int]:
    """n keep-alive connections, spread evenly over the server's worker processes.

    Which worker accepts a connection is up to the kernel and the workers' accept
    loops: 64 connections opened by one client in a row may all land on one worker
    (seen with both servers), which real traffic through a balancer would not do.
    So a connection held by the busiest worker is replaced until the spread is
    even, within a bounded number of tries. Returns the streams, the connections
    per worker, and how many were replaced.
    """
    streams: list[trio.SocketStream] = []

    async def accepted() -> tuple[list[int], dict[int, int]]:
        ports = {s.socket.getsockname()[1]: s for s in streams}
        with trio.fail_after(10):
            while True:
                workers, owners = connection_owners(server_pid, port)
                if all(p in owners for p in ports):
                    return workers, {p: owners[p] for p in ports}
                await trio.sleep(0.005)

    for _ in range(n):
        streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        await trio.sleep(CONNECT_GAP)
    replaced = 0
    while True:
        workers, owners = await accepted()
        load = {w: 0 for w in workers}
        for w in owners.values():
            load[w] = load.get(w, 0) + 1
        busiest = max(load, key=load.__getitem__)
        if max(load.values()) - min(load.values()) <= 2 or replaced >= 20 * n:
            return streams, load, replaced
        victim = next(s for s in streams if owners[s.socket.getsockname()[1]] == busiest)
        streams.remove(victim)
        await victim.aclose()
        streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        replaced += 1


def run_http_load(
    name: str,
    port: int,
    requests: list[list[bytes]],
    mode: Mode,
    server_pid: int,
    pg_pid: int,
) -> Phase:
    phase = Phase(name)
    meter = CpuMeter(time.process_time, server_pid, pg_pid)
    window = Window(len(requests), mode.seconds, meter.start)
    spread: dict[int, int] = {}

    async def main() -> None:
        with trio.fail_after(mode.seconds + 180):
            streams, load, replaced = await open_connections(port, len(requests), server_pid)
            spread.update(load)
            phase.spread_note = f"{replaced} connection(s) replaced to even them out"
            async with trio.open_nursery() as nursery:
                for stream, reqs in zip(streams, requests, strict=True):
                    nursery.start_soon(session_client, stream, reqs, window, phase)

    trio.run(main)
    by_pid = meter.stop(phase)
    phase.workers = ", ".join(
        f"pid {pid}: {n} conns, {by_pid.get(pid, 0.0):.1f}s" for pid, n in spread.items()
    )
    phase.seconds = window.t1 - window.t0
    return phase


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
    cfg = {
        "dsn": s.dsn,
        "bodies": str(s.bodies_file),
        "tenant_id": s.tenant_id,
        "key_id": s.key_id,
        "writers": DIRECT_WRITERS,
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

    def child_cpu() -> float:
        t = psutil.Process(child.pid).cpu_times()
        return float(t.user + t.system)

    meter = CpuMeter(child_cpu, None, s.pg_pid)
    phase = Phase("direct asyncpg (8 writers)")
    try:
        expect("start")
        meter.start()
        expect("end")
        meter.stop(phase)
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
        phase = run_http_load(name, port, s.requests, s.mode, server.proc.pid, s.pg_pid)
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


def report(phases: list[Phase], mode: Mode) -> None:
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
        server = f"{p.server_cpu:6.1f}" if p.server_cpu else f"{'-':>6s}"
        print(
            f"{p.name:34s} {p.events_per_s:9,.0f} {p.batches_per_s:9,.0f} "
            f"{p.percentile(0.50):7.1f} {p.percentile(0.99):7.1f} {vs_d:8.2f} {vs_c:7.2f} "
            f"{p.seconds:6.1f}s | {p.client_cpu:6.1f} {server} {p.pg_cpu:6.1f} "
            f"{p.other_cpu:6.1f} {p.idle_cpu:6.1f} | "
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
        per = [x * 1000 / p.timed_batches for x in (p.client_cpu, p.server_cpu, p.pg_cpu)]
        ceiling = cores * 1000 / sum(per) * EVENTS
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
        share = p.other_cpu / (p.seconds * cores) if p.seconds else 0.0
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
    if mode is QUICK:
        print("(--quick: short windows, figures are indicative only)")


# --- main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer batches")
    parser.add_argument(
        "--only", action="append", choices=list(PHASES), help="run only these phases (repeatable)"
    )
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
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

    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    pg = EmbeddedPostgres(tmp / "pg")
    try:
        server_dsn = pg.start()
        pg_pid = int((pg.pgdata / "postmaster.pid").read_text().split()[0])

        async def create_db(conn: asyncpg.Connection) -> tuple[str, str, str]:
            await conn.execute("CREATE DATABASE bench")
            return (
                await conn.fetchval("SHOW server_version"),
                await conn.fetchval("SHOW fsync"),
                await conn.fetchval("SHOW synchronous_commit"),
            )

        version, fsync, sync_commit = with_conn(server_dsn, create_db)
        dsn = pg.dsn("bench")
        print(
            f"PostgreSQL {version} (embedded, {tmp}), fsync={fsync}, "
            f"synchronous_commit={sync_commit}"
        )

        # The key (creating tenant and schema), as an operator would.
        keys = subprocess.run(
            [PY, "-m", "service", "keys", "create", "--tenant", "bench", "--scope", "ingest"],
            env={**os.environ, "DATABASE_URL": dsn, "LOG_LEVEL": "WARNING"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        token = keys.stdout.strip()
        key_id = token.split("_")[1]
        tenant_id = with_conn(
            dsn, lambda c: c.fetchval("SELECT id FROM tenants WHERE name = 'bench'")
        )

        t = time.perf_counter()
        bodies = build_bodies(SESSIONS, mode.batches)
        built = time.perf_counter() - t
        sizes = [len(b) for s in bodies for b in s]
        probe = orjson.loads(bodies[0][0])["events"]
        payload_bytes = sum(len(orjson.dumps(e["payload"])) for e in probe) / len(probe)
        print(
            f"workload: {SESSIONS} sessions x {mode.batches} batches x {EVENTS} events "
            f"({SESSIONS * mode.batches * EVENTS:,} events; first {WARM_BATCHES} batches of each "
            f"session are warm-up), payload {payload_bytes:.0f} B, "
            f"body {sum(sizes) / len(sizes) / 1024:.1f} KiB; "
            f"timed window <= {mode.seconds:.0f}s per phase; built in {built:.1f}s"
        )
        bodies_file = tmp / "bodies.pickle"
        with bodies_file.open("wb") as f:
            pickle.dump(bodies, f, protocol=pickle.HIGHEST_PROTOCOL)
        requests = encode_requests(bodies, token)
        del bodies
        setup = Setup(tmp, dsn, pg_pid, key_id, tenant_id, bodies_file, requests, mode)

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
        report(phases, mode)
        print(f"wall time {time.monotonic() - started:.0f}s")
        clean = all(p.ok and not p.first_error for p in phases)
        return 0 if clean else 1
    finally:
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
