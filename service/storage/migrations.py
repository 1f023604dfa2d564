"""Versioned SQL migrations, applied in order and recorded in `schema_migrations`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from . import citus
from .database import Connection, Database
from .locks import MIGRATIONS

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("service.storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


async def _applied(conn: Connection) -> set[int]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def _on_citus_worker(conn: Connection) -> bool:
    if not await citus.has_citus(conn):
        return False
    return bool(await conn.fetchval("SELECT groupid <> 0 FROM pg_dist_local_group"))


async def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied."""
    done: list[Migration] = []
    for migration in available():

        async def apply(conn: Connection, m: Migration = migration) -> bool:
            # Several processes may start at once: the lock makes them take turns.
            await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", MIGRATIONS)
            if m.version in await _applied(conn):
                return False
            if await _on_citus_worker(conn):
                # DDL on a worker would make local tables there, beside the
                # cluster's: the schema is changed through the coordinator.
                raise RuntimeError(
                    f"migration {m.version:04d}_{m.name} is pending: this is a Citus worker, "
                    "apply migrations through the coordinator"
                )
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            return True

        if await db.transaction(apply, deadline=120):
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
    return done


async def pending(db: Database) -> list[int]:
    """Versions not yet applied (empty when the schema is current)."""

    async def check(conn: Connection) -> set[int]:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return set()
        return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}

    applied = await db.run(check)
    return [m.version for m in available() if m.version not in applied]
