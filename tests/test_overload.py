"""Load shedding: a session's inbox and the process's pending work are bounded, and a
batch refused with 429 is not stored behind the client's back."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import httpx
import trio

from service.config import Settings
from service.storage.database import Database

from .chain import Chain, body_of
from .conftest import start_server
from .support import JSON, MakeKey, assert_problem, assert_verifies, assert_whole_batches, stored
from .test_atomicity import FAULTS, trigger


async def test_flooded_session_sheds_load_and_loses_nothing(
    db: Database, settings: Settings, make_key: MakeKey, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, replace(settings, inbox_size=1, max_pending=2))
    chain = Chain()
    batches = list(chain.batches(24, 4))
    statuses: Counter[int] = Counter()
    accepted: list[int] = []  # `accepted` of every 200
    appended_heads: list[int] = []

    done = [trio.Event() for _ in batches]

    async def send_until_stored(client: httpx.AsyncClient, i: int) -> None:
        events = batches[i]
        while True:
            resp = await client.post("/v1/ingest", content=body_of(events), headers=JSON)
            statuses[resp.status_code] += 1
            if resp.status_code == 200:
                body = resp.json()
                accepted.append(body["accepted"])
                if body["accepted"]:
                    appended_heads.append(body["head"]["seq"])
                assert body["head"]["seq"] >= events[-1]["seq"]
                done[i].set()
                return
            if resp.status_code == 429:
                assert_problem(resp, 429, "overloaded")
                assert int(resp.headers["retry-after"]) >= 1
                # Honour Retry-After in spirit, scaled down to keep the test short.
                await trio.sleep(random.uniform(0.01, 0.05))
            else:
                # The batch came before its predecessor: wait for it, as an SDK would.
                body = assert_problem(resp, 409, "seq_gap")
                assert body["next_seq"] < events[0]["seq"]
                await done[i - 1].wait()

    # Each commit of this session sleeps a little inside its transaction, so
    # batches arriving meanwhile find the inbox and the pending count full.
    slow_commit = trigger(
        db, FAULTS["after_write_head"], chain.session_id, "PERFORM pg_sleep(0.02);"
    )
    client = server.client(await make_key())
    async with slow_commit, client, trio.open_nursery() as flood:
        for i in range(len(batches)):
            flood.start_soon(send_until_stored, client, i)

    assert statuses[429] > 0, statuses
    assert set(statuses) <= {200, 409, 429}, statuses
    # Every batch was answered 200 exactly once, and every 200 is stored; the
    # refused attempts left nothing: the events stored are those the 200s accepted.
    assert statuses[200] == len(batches)
    final = await stored(db, chain.session_id)
    assert_whole_batches(final)
    assert sum(accepted) == final.event_count == len(chain.events) == 96
    assert len(final.seals) == len(appended_heads)
    assert sorted(appended_heads) == [seal["seq"] for seal in final.seals]
    assert final.events == {e["seq"]: e["hash"] for e in chain.events}
    async with server.client(await make_key("acme", "read")) as reader:
        await assert_verifies(reader, chain.session_id)
