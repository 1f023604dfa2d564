"""Fixtures: a real PostgreSQL (embedded, or DATABASE_URL), one fresh database per
test session, tables emptied before each test, and the service over real HTTP."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from service.app import create_app
from service.config import Settings
from service.core import credentials
from service.runtime import Runtime
from service.storage import citus, migrations, tenants
from service.storage.database import (
    Connection,
    Database,
    PoolSettings,
    open_database,
    with_database,
)
from service.storage.embedded import EmbeddedPostgres

from .support import ROOT, MakeKey

TABLES = "records, sessions, api_keys, tenants, signing_keys"


def with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server: DATABASE_URL's, or an embedded one for this run.

    Its data folder is not under pytest's base temp folder: pytest resets that
    folder to mode 0700 whenever a session starts, which would lock the server's
    own user out of it while another test session runs beside this one."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="chain-test-pg-"))
    server = EmbeddedPostgres(folder / "data")
    try:
        yield server.start()
    finally:
        server.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh database for this test session, migrated (on every node, with the
    extension and the node list, when DATABASE_URL is a Citus coordinator's)."""
    name = f"chain_test_{os.getpid()}_{secrets.token_hex(3)}"
    url = citus.create_database(pg_server, name)
    try:
        with_database(url, migrations.migrate)
        yield url
    finally:
        citus.drop_database(pg_server, name)


async def _truncate(conn: Connection) -> None:
    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test database, emptied, through the same bridge the service uses."""
    async with open_database(PoolSettings(database_url, max_size=4)) as database:
        await database.run(_truncate)
        yield database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    runtime: Runtime
    app: QuartTrio

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        seal_key_file=tmp_path / "seal_key.pem",
        actor_idle_seconds=5,
    )


async def start_server(
    nursery: trio.Nursery,
    settings: Settings,
    *,
    keep_alive_timeout: float = 5,
    stop: trio.Event | None = None,
) -> Server:
    """The app on hypercorn's trio worker, in this process, on a loopback port;
    it shuts down gracefully at the test's end, or when `stop` is set."""
    app = create_app(settings)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 5
    config.keep_alive_timeout = keep_alive_timeout
    stop = trio.Event() if stop is None else stop
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    server = Server(binds[0], app.extensions["runtime"], app)
    nursery.start_soon(_stop_at_teardown, stop)
    async with httpx.AsyncClient(base_url=server.url) as client:
        with trio.fail_after(20):
            while (await client.get("/readyz")).status_code != 200:
                await trio.sleep(0.05)
    return server


async def _stop_at_teardown(stop: trio.Event) -> None:
    try:
        await stop.wait()
    finally:
        stop.set()


@pytest.fixture
async def server(db: Database, settings: Settings, nursery: trio.Nursery) -> Server:
    return await start_server(nursery, settings)


@pytest.fixture
def make_key(db: Database) -> MakeKey:
    """`await make_key("tenant", "ingest", "read")` -> a new API key."""

    async def make(tenant: str = "acme", *scopes: str) -> str:
        key = credentials.new_api_key()
        chosen = frozenset(credentials.Scope(s) for s in (scopes or ("ingest", "read")))
        await tenants.create_api_key(db, tenant, chosen, key.api_key_id, key.secret_hash)
        return key.token

    return make


# ---- separate server processes -------------------------------------------------


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_serve(
    database_url: str,
    data_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> ServeProcess:
    """`python -m service serve` as its own process (on `port`, so that a restart
    keeps the clients' URL, or a free one); returns once /readyz is 200."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"serve-{port}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--data-dir",
                str(data_dir),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handle = ServeProcess(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{handle.url}/readyz", timeout=2).status_code == 200:
                return handle
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    handle.stop()
    raise RuntimeError(f"serve never became ready:\n{log.read_text()}")


def settings_for(base: Settings, **changes: object) -> Settings:
    return replace(base, **changes)  # type: ignore[arg-type]
