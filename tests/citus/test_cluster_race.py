"""The two-process race of `tests/test_race.py` with the processes on different
nodes of the cluster: one connected to the coordinator, one to a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from service.storage.database import Database

from ..chain import Chain
from ..support import MakeKey
from ..test_race import race, spawn_on, variants
from .conftest import Cluster


@pytest.mark.slow
async def test_two_processes_on_two_nodes_race_on_one_session(
    db: Database, make_key: MakeKey, cluster: Cluster, tmp_path: Path
) -> None:
    session_id = Chain().session_id
    chains = variants(session_id)
    token = await make_key()
    urls = [cluster.url, cluster.url_of(cluster.workers[0])]
    procs = await trio.to_thread.run_sync(spawn_on, urls, tmp_path)
    try:
        await race(db, procs, token, session_id, chains)
    finally:
        for p in procs:
            await trio.to_thread.run_sync(p.stop)
