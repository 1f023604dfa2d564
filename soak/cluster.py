"""The processes under test: one embedded PostgreSQL and one `serve --workers N`,
and the faults done to them. Everything here blocks; the run calls it in threads.

PostgreSQL is driven through `service.storage.embedded` (the wheel's initdb and
pg_ctl); the service only through its command line, its HTTP port and signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]

from service.storage.embedded import EmbeddedPostgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status of `GET path` on a fresh connection, or None if there is none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            line = s.makefile("rb").readline()
        return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Cluster:
    def __init__(self, root: Path, tmp: Path, *, workers: int, env: dict[str, str]) -> None:
        self.root = root  # the working directory of `python -m service`
        self.tmp = tmp
        self.workers = workers
        self.pg = EmbeddedPostgres(tmp / "pg")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "serve"
        self.env = env
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_starts = 0
        self.frozen: list[int] = []
        self.logs: list[Path] = []

    # ---- PostgreSQL ----------------------------------------------------------

    def start_pg(self) -> str:
        """Start PostgreSQL; after a SIGKILL its orphaned backends may hold the old
        shared memory for a moment, which makes it refuse to start: retry."""
        for attempt in range(100):
            try:
                dsn = self.pg.start()
                self.env["DATABASE_URL"] = dsn
                return dsn
            except RuntimeError:
                if attempt == 99:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def pg_pid(self) -> int | None:
        try:
            return int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def stop_pg(self, mode: str) -> None:
        self.pg.stop(mode)

    def kill_pg(self) -> None:
        self.pg.kill()

    def freeze_pg(self) -> int:
        """SIGSTOP the postmaster and all its children; how many processes."""
        pid = self.pg_pid()
        if pid is None:
            return 0
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGSTOP)
                self.frozen.append(p.pid)
        return len(self.frozen)

    def thaw_pg(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    async def terminate_backends(self) -> int:
        """pg_terminate_backend of every client connection but ours: the service's."""
        conn = await asyncpg.connect(self.env["DATABASE_URL"])
        try:
            n = await conn.fetchval(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                   FROM pg_stat_activity
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"""
            )
            return int(n or 0)
        finally:
            await conn.close()

    # ---- the service -----------------------------------------------------------

    def service(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"python -m service {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip()

    def start_serve(self) -> None:
        """Start `serve` (same port, data dir and seal key every time); returns at once."""
        self.serve_starts += 1
        log = self.tmp / f"serve-{self.serve_starts:04d}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master, workers, helpers
            )

    def serve_exited(self) -> int | None:
        """The serve process's exit status, or None while it runs."""
        return None if self.serve is None else self.serve.poll()

    def worker_pids(self) -> list[int]:
        """The serve process's live worker processes (multiprocessing children)."""
        if self.serve is None or self.serve.poll() is not None:
            return []
        out = []
        try:
            children = psutil.Process(self.serve.pid).children()
        except psutil.NoSuchProcess:
            return []
        for p in children:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if any("spawn_main" in part for part in p.cmdline()):
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                continue
        return out

    def kill_worker(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def kill_serve(self) -> None:
        """SIGKILL the whole server: its process group (master, workers, helpers)."""
        if self.serve is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.serve.pid, signal.SIGKILL)
        self.serve.wait(timeout=30)

    def group_alive(self, grace: float = 0.0) -> list[int]:
        """Processes still in the serve process group (after a kill, orphans),
        waiting up to `grace` seconds for them to be gone."""
        deadline = time.monotonic() + grace
        while (alive := self._group()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return alive

    def _group(self) -> list[int]:
        if self.serve is None:
            return []
        out = []
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(p.pid) == self.serve.pid and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
        return out

    def stop_serve(self) -> None:
        if self.serve is None:
            return
        if self.serve.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.serve.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.serve.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.serve.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.serve.wait(timeout=10)

    def ready_streak(self, n: int) -> bool:
        """/readyz is 200 on `n` fresh connections in a row."""
        return all(http_status(self.port, "/readyz") == 200 for _ in range(n))

    # ---- the end ---------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop everything this run started, whatever state it is in."""
        self.thaw_pg()
        self.stop_serve()
        self.pg.stop("fast")
        if self.pg.running():
            self.pg.stop("immediate")
        if self.pg.running():
            self.pg.kill()

    def leftovers(self) -> list[str]:
        """Processes of ours still alive: the serve group, and PostgreSQL's."""
        out = [f"serve group pid {pid}" for pid in self.group_alive(grace=5.0)]
        pgdata = str(self.pg.pgdata)
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if pgdata in cmd and p.pid != os.getpid():
                out.append(f"postgres pid {p.pid}")
        return out
