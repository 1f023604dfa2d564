"""Fixtures for the client SDK's tests: the real service in its own process, on
a database of its own (never truncated under it), and API keys."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.core import credentials
from service.storage import citus, migrations, tenants
from service.storage.database import Database, with_database

from ..conftest import ServeProcess, free_port, spawn_serve
from ..support import Stored, stored


@pytest.fixture(scope="session")
def sdk_database_url(pg_server: str) -> Iterator[str]:
    """A database for the SDK tests alone: the service processes they start
    keep their seal keys in it, so no other test may empty it under them."""
    name = f"chain_sdk_{os.getpid()}_{secrets.token_hex(3)}"
    url = citus.create_database(pg_server, name)
    with_database(url, migrations.migrate)
    try:
        yield url
    finally:
        citus.drop_database(pg_server, name)


@dataclass
class Service:
    """`python -m service serve` in its own process, and its database."""

    database_url: str
    data_dir: Path
    port: int
    proc: ServeProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = spawn_serve(
            self.database_url, self.data_dir, port=self.port, env={"LOG_LEVEL": "WARNING"}
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait()

    def key(self, *scopes: str, tenant: str = "sdk") -> str:
        key = credentials.new_api_key()
        chosen = frozenset(credentials.Scope(s) for s in (scopes or ("ingest", "read")))

        async def work(db: Database) -> None:
            await tenants.create_api_key(db, tenant, chosen, key.api_key_id, key.secret_hash)

        with_database(self.database_url, work)
        return key.token

    def stored(self, session_id: str) -> Stored:
        async def work(db: Database) -> Stored:
            return await stored(db, session_id)

        return with_database(self.database_url, work)

    def statuses(self, session_id: str) -> set[str]:
        """The `status` of every stored record of the session (events and seals)."""

        async def work(db: Database) -> set[str]:
            rows = await db.run(
                lambda conn: conn.fetch(
                    "SELECT DISTINCT status::text AS s FROM records WHERE session_id = $1",
                    session_id,
                )
            )
            return {r["s"] for r in rows}

        return with_database(self.database_url, work)

    def replay(self, key: str, session_id: str) -> list[bytes]:
        resp = httpx.get(
            f"{self.url}/v1/sessions/{session_id}/records",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        return resp.content.splitlines()

    def public_keys(self) -> dict[str, bytes]:
        resp = httpx.get(f"{self.url}/v1/keys", timeout=30)
        return {k["key_id"]: bytes.fromhex(k["public_key"]) for k in resp.json()["keys"]}


@pytest.fixture(scope="module")
def service(sdk_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("serve")
    for attempt in range(3):  # a port picked free can be taken before serve binds it
        svc = Service(sdk_database_url, data_dir, free_port())
        try:
            svc.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def api_key(service: Service) -> str:
    return service.key("ingest", "read")
