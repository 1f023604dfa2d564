"""`tests/test_atomicity.py`'s injected errors, on the cluster: the fault is raised
on the worker, inside the delegated `append_packed_at_head`, and nothing is stored.

Its triggers need `citus.enable_unsafe_triggers` on distributed tables, and
their DDL in one transaction needs Citus's sequential mode: both are set for
this module only (the service itself uses no triggers). The variant that kills
the client's backend is not repeated: on the cluster the statement sleeps on
the worker, not in the backend the service is connected to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.storage.database import Connection, Database, with_database

from ..test_atomicity import test_error_inside_the_commit_stores_nothing
from .conftest import Cluster

__all__ = ["test_error_inside_the_commit_stores_nothing"]

_SETTINGS = ("citus.enable_unsafe_triggers = on", "citus.multi_shard_modify_mode = sequential")


def _alter(url: str, clauses: list[str]) -> None:
    async def each(conn: Connection) -> None:
        for c in clauses:
            await conn.execute(
                f"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I {c}', current_database()); END $$"
            )

    async def work(db: Database) -> None:
        await db.run(each)

    with_database(url, work)


@pytest.fixture(autouse=True, scope="module")
def unsafe_triggers(cluster: Cluster) -> Iterator[None]:
    _alter(cluster.url, [f"SET {s}" for s in _SETTINGS])
    yield
    _alter(cluster.url, [f"RESET {s.split()[0]}" for s in _SETTINGS])
