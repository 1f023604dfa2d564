"""On a Citus cluster the server writes one session per statement: each
session's commit runs on the worker that holds it (migration 0003), which one
statement for several sessions could not do (core.group_commit)."""

from __future__ import annotations

import trio

from ..chain import Chain, body_of
from ..conftest import Server
from ..support import JSON, MakeKey
from .conftest import Cluster


async def test_the_server_does_not_group_commits_on_a_cluster(
    server: Server, cluster: Cluster, make_key: MakeKey
) -> None:
    key = await make_key("acme", "ingest")
    chains = [Chain() for _ in range(16)]
    statuses: list[int] = []

    async def send(chain: Chain) -> None:
        for _ in range(3):
            resp = await client.post("/v1/ingest", content=body_of(chain.make(5)), headers=JSON)
            statuses.append(resp.status_code)

    async with server.client(key) as client, trio.open_nursery() as nursery:
        for chain in chains:
            nursery.start_soon(send, chain)
    assert statuses == [200] * 48
    assert server.runtime.group.max_batches == 1
    assert server.runtime.group.statistics()["groups"] == 0
