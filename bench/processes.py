"""Processes for the benches: a fresh embedded PostgreSQL, servers and `python -m
service` commands as subprocesses, free ports, and meters of CPU time and RSS.

Database access here is plain asyncio + asyncpg: nothing in bench/ imports
`trio_asyncio`, which patches asyncio's loop policy process-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import psutil  # type: ignore[import-untyped]

from service.storage.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# Where `python -m service` (and the servers) run: this checkout, or another one
# (an earlier commit's worktree) to compare versions with the same bench code.
SERVICE_ROOT = Path(os.environ.get("CHAIN_BENCH_SERVICE_ROOT") or ROOT)
PY = sys.executable
SERVICE = (PY, "-m", "service")
T = TypeVar("T")


# ---- PostgreSQL ------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A running embedded PostgreSQL: its temp dir (also for the bench's other
    files), the server, and the DSN of its `postgres` database."""

    tmp: Path
    server: EmbeddedPostgres
    dsn: str

    @property
    def pid(self) -> int:
        """The postmaster's pid (all backends are its children)."""
        return int((self.server.pgdata / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def fresh_postgres(prefix: str) -> Iterator[Postgres]:
    """A new PostgreSQL in a new temp dir; both are gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(tmp / "pg")
    try:
        yield Postgres(tmp, pg, pg.start())
    finally:
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def with_conn(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection, in a fresh plain-asyncio loop."""

    async def main() -> T:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


# ---- the service's commands and servers ---------------------------------------------


def service_command(args: list[str], env: dict[str, str]) -> str:
    """Run `python -m service <args>` to completion; its stdout, stripped."""
    done = subprocess.run(
        [*SERVICE, *args],
        env=env,
        cwd=SERVICE_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(port: int, path: str) -> int | None:
    """The status of `GET path` on a fresh connection, or None if there is none."""
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
                cwd=SERVICE_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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


# ---- CPU time --------------------------------------------------------------------


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


def process_cpu(pid: int) -> float:
    """user+system CPU seconds of one process."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


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


@dataclass
class CpuUsage:
    """CPU seconds of a window: the load generator ("client"), the server's process
    tree, all PostgreSQL processes, any other process, and idle + iowait (summed
    over the cores); `by_pid` is each server process's share."""

    client: float = 0.0
    server: float = 0.0
    pg: float = 0.0
    other: float = 0.0
    idle: float = 0.0
    by_pid: dict[int, float] = field(default_factory=dict)
    wall: float = 0.0  # seconds between start and stop

    def other_share(self, cores: int) -> float:
        """The share of the cores that other processes took in the metered time."""
        return self.other / (self.wall * cores) if self.wall else 0.0


class CpuMeter:
    """Where the cores' time went between `start` and `stop`."""

    def __init__(self, client: Callable[[], float], server_pid: int | None, pg_pid: int) -> None:
        self.client, self.server_pid, self.pg_pid = client, server_pid, pg_pid

    def _server(self) -> dict[int, float]:
        return cpu_seconds([self.server_pid]) if self.server_pid else {}

    def start(self) -> None:
        self.c0, self.s0, self.p0 = self.client(), self._server(), cpu_seconds([self.pg_pid])
        self.m0 = psutil.cpu_times()
        self.t0 = time.monotonic()

    def stop(self) -> CpuUsage:
        c1, s1, p1, m1 = (
            self.client(),
            self._server(),
            cpu_seconds([self.pg_pid]),
            psutil.cpu_times(),
        )
        use = CpuUsage(
            client=c1 - self.c0,
            server=cpu_spent(self.s0, s1),
            pg=cpu_spent(self.p0, p1),
            by_pid={pid: v - self.s0.get(pid, 0.0) for pid, v in s1.items()},
            wall=time.monotonic() - self.t0,
        )
        use.idle = (m1.idle - self.m0.idle) + (m1.iowait - self.m0.iowait)
        # guest time is already counted in user; steal is time the host took away.
        fields = ("user", "nice", "system", "irq", "softirq", "steal")
        busy = sum(getattr(m1, f) - getattr(self.m0, f) for f in fields)
        use.other = max(0.0, busy - use.client - use.server - use.pg)
        return use


# ---- memory ----------------------------------------------------------------------


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class PeakRss:
    """Samples a process's RSS every few milliseconds in a thread."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self._proc = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak: int = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(self._every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measured_command(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run `python -m service <args>`: its wall time, peak RSS and last output line."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*SERVICE, *args],
        cwd=SERVICE_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with PeakRss(proc.pid, every=0.02) as peak:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{out.decode()}")
    return time.perf_counter() - started, peak.peak, out.decode().strip().splitlines()[-1]


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"
