"""Two `serve` processes, many clients each, racing on one session with competing
chains and honest retries (PROTOCOL §3 step 4, §7).

Four variants of one session are built independently: an honest chain, and three
forks that agree with it up to a divergence point and then carry other
payloads. Every client walks its variant from its view of the head, resending
some events it already sent (honest retries), sometimes skipping ahead (gaps),
resyncing on `seq_gap`, giving up on `chain_fork`, done once a batch holding its
last event is accepted. Whichever variant wins each
divergence point, the stored chain must be one variant exactly, each seq written
once, every answer consistent with what was finally stored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from service.storage.database import Database

from .chain import ZERO, Chain, body_of, relink
from .conftest import ServeProcess, spawn_serve
from .support import JSON, MakeKey, assert_problem, assert_verifies, assert_whole_batches, stored

N = 200  # events in each variant
DIVERGE = (30, 75, 120)  # where each forged variant leaves the honest one
CLIENTS_PER_PROCESS = 16


@dataclass
class Answer:
    process: int
    variant: int
    events: list[dict[str, Any]]
    status: int
    body: dict[str, Any]


def variants(session_id: str) -> list[list[dict[str, Any]]]:
    honest = Chain(session_id=session_id).make(N)
    out = [honest]
    for k, d in enumerate(DIVERGE, start=1):
        forged = [{**e, "payload": {**e["payload"], "forged_by": k}} for e in honest[d:]]
        out.append(honest[:d] + relink(forged, honest[d - 1]["hash"]))
    return out


def spawn_on(urls: list[str], tmp_path: Path) -> list[ServeProcess]:
    """One `serve` process per database URL (the same one twice, or two nodes)."""
    procs: list[ServeProcess] = []
    try:
        for i, url in enumerate(urls):
            procs.append(spawn_serve(url, tmp_path / f"p{i}"))
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


@pytest.mark.slow
async def test_two_processes_race_on_one_session(
    db: Database, make_key: MakeKey, database_url: str, tmp_path: Path
) -> None:
    session_id = Chain().session_id
    chains = variants(session_id)
    token = await make_key()
    procs = await trio.to_thread.run_sync(spawn_on, [database_url] * 2, tmp_path)
    try:
        await race(db, procs, token, session_id, chains)
    finally:
        for p in procs:
            await trio.to_thread.run_sync(p.stop)


async def race(
    db: Database,
    procs: list[ServeProcess],
    token: str,
    session_id: str,
    chains: list[list[dict[str, Any]]],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    seal_keys = []
    for p in procs:
        async with httpx.AsyncClient(base_url=p.url) as client:
            seal_keys.append((await client.get("/readyz")).json()["seal_key"])
    assert seal_keys[0] != seal_keys[1]  # each process signs with its own key

    # A batch past the head of an empty session: a gap, answered with the head.
    async with httpx.AsyncClient(base_url=procs[0].url, headers=headers) as client:
        resp = await client.post("/v1/ingest", content=body_of(chains[0][3:6]), headers=JSON)
        body = assert_problem(resp, 409, "seq_gap")
        assert (body["next_seq"], body["head_hash"]) == (0, ZERO)

    answers: list[Answer] = []
    finished: list[tuple[int, str]] = []  # (variant, "done" | "forked")

    async def walk(process: int, variant: int, seed: int) -> None:
        rng = random.Random(seed)
        events = chains[variant]
        pos = 0
        async with httpx.AsyncClient(
            base_url=procs[process].url, headers=headers, timeout=60
        ) as client:
            while True:
                start = max(0, pos - rng.choice((0, 0, 0, 1, 3)))  # honest retries
                if rng.random() < 0.1:
                    start = pos + rng.randint(1, 4)  # ahead of the head
                batch = events[min(start, N - 1) :][: rng.randint(1, 8)]
                while True:
                    resp = await client.post("/v1/ingest", content=body_of(batch), headers=JSON)
                    body = resp.json()
                    answers.append(Answer(process, variant, batch, resp.status_code, body))
                    if resp.status_code != 429:
                        break
                    # Shed: the same batch again, after a (scaled-down) Retry-After.
                    assert_problem(resp, 429, "overloaded")
                    assert int(resp.headers["retry-after"]) >= 1
                    await trio.sleep(rng.uniform(0.005, 0.02))
                if resp.status_code == 200:
                    if batch[-1]["seq"] == N - 1:
                        break  # this client's whole chain is stored
                    pos = max(pos, body["head"]["seq"] + 1)
                elif resp.status_code == 409 and body.get("code") == "seq_gap":
                    pos = body["next_seq"]
                elif resp.status_code == 409 and body.get("code") == "chain_fork":
                    finished.append((variant, "forked"))
                    return
                else:
                    raise AssertionError(f"unexpected answer {resp.status_code}: {resp.text}")
        finished.append((variant, "done"))

    async with trio.open_nursery() as nursery:
        for process in range(len(procs)):
            for j in range(CLIENTS_PER_PROCESS):
                nursery.start_soon(walk, process, j % len(chains), process * 1000 + j)

    final = await stored(db, session_id)
    assert_whole_batches(final)
    assert final.event_count == N
    winners = [
        v
        for v, chain in enumerate(chains)
        if all(final.events[e["seq"]] == e["hash"] for e in chain)
    ]
    assert len(winners) == 1
    winner = winners[0]

    def stored_head(next_seq: int) -> str:
        return final.events[next_seq - 1] if next_seq else ZERO

    seals = {seal["hash"]: seal for seal in final.seals}
    statuses = {a.status for a in answers}
    assert statuses <= {200, 409, 429}, statuses
    appended = 0
    for a in answers:
        first = a.events[0]["seq"]
        if a.status == 200:
            # Stored exactly as sent, and the answer's counts add up.
            assert all(final.events[e["seq"]] == e["hash"] for e in a.events)
            assert a.body["accepted"] + a.body["duplicates"] == len(a.events)
            assert a.body["head"]["hash"] == stored_head(a.body["head"]["seq"] + 1)
            seal = seals[a.body["seal"]["hash"]]
            assert seal == a.body["seal"]
            if a.body["accepted"]:
                appended += 1
                assert seal["payload"]["key_id"] == seal_keys[a.process]
                assert seal["payload"]["first_seq"] == first + a.body["duplicates"]
        elif a.status == 409:
            # The head reported was a real head of the (append-only) stored chain.
            assert a.body["head_hash"] == stored_head(a.body["next_seq"])
            if a.body["code"] == "seq_gap":
                assert first > a.body["next_seq"]
            else:
                assert a.body["code"] == "chain_fork"
                conflicts = any(final.events[e["seq"]] != e["hash"] for e in a.events) or (
                    a.events[0]["prev_hash"] != stored_head(first)
                )
                assert conflicts, a
    # Every seq written once: the appended batches account for every event and seal.
    assert sum(a.body["accepted"] for a in answers if a.status == 200) == N
    assert appended == len(final.seals)

    # The winner's clients all got to the end; every other client was told 409
    # chain_fork (with the head to resync to), never a 500 or a silent loss.
    assert len(finished) == len(procs) * CLIENTS_PER_PROCESS
    for variant, how in finished:
        assert how == ("done" if variant == winner else "forked"), (variant, winner, how)
    assert any(a.status == 409 and a.body["code"] == "chain_fork" for a in answers)

    used = {seals[h]["payload"]["key_id"] for h in seals}
    for p in procs:
        async with httpx.AsyncClient(base_url=p.url, headers=headers) as client:
            report = await assert_verifies(client, session_id)
            assert set(report.keys_used) == used
            assert report.events == N and report.seals == len(final.seals)
