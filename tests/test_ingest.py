"""Accepted batches: the response, the seal, what is stored, retries and overlaps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.core.outcomes import Appended, Conflict
from service.storage.database import Connection, Database

from .chain import ZERO, Chain, body_of, event_hash, relink
from .conftest import Server
from .support import JSON, MakeKey, direct_committer


@pytest.fixture
async def client(server: Server, make_key: MakeKey) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client(await make_key("acme", "ingest", "read")) as c:
        yield c


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/ingest", content=body_of(events), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def public_keys(client: httpx.AsyncClient) -> dict[str, Ed25519PublicKey]:
    keys = (await client.get("/v1/keys")).json()["keys"]
    return {
        k["key_id"]: Ed25519PublicKey.from_public_bytes(bytes.fromhex(k["public_key"]))
        for k in keys
    }


def check_seal(seal: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> None:
    """PROTOCOL §4, checked with `rfc8785` and `cryptography`, not hashcore."""
    assert set(seal) == {
        "session_id",
        "seq",
        "kind",
        "ts",
        "payload",
        "prev_hash",
        "hash",
        "signature",
    }
    assert seal["kind"] == "CHAIN_SEAL"
    assert set(seal["payload"]) == {"first_seq", "prev_seal", "key_id"}
    assert seal["hash"] == event_hash(seal)
    key_id = seal["payload"]["key_id"]
    raw = b"".join(k.public_bytes_raw() for k in [keys[key_id]])
    assert hashlib.sha256(raw).hexdigest()[:16] == key_id
    keys[key_id].verify(bytes.fromhex(seal["signature"]), bytes.fromhex(seal["hash"]))


async def stored_rows(db: Database, session_id: str) -> list[dict[str, Any]]:
    async def work(conn: Connection) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            "SELECT seq, is_seal, kind, ts, hash, record, status FROM records "
            "WHERE session_id = $1 ORDER BY seq, is_seal",
            session_id,
        )
        return [dict(r) for r in rows]

    return await db.run(work)


async def test_accepted_batch_is_stored_canonically_and_sealed(
    db: Database, client: httpx.AsyncClient
) -> None:
    chain = Chain()
    events = chain.make(5)
    body = await post(client, events)
    assert body["session_id"] == chain.session_id
    assert (body["accepted"], body["duplicates"], body["duplicate"]) == (5, 0, False)
    assert body["head"] == {"seq": 4, "hash": events[-1]["hash"]}

    seal = body["seal"]
    check_seal(seal, await public_keys(client))
    assert seal["seq"] == 4
    assert seal["prev_hash"] == events[-1]["hash"]
    assert seal["payload"]["first_seq"] == 0
    assert seal["payload"]["prev_seal"] == ZERO

    rows = await stored_rows(db, chain.session_id)
    assert [(r["seq"], r["is_seal"]) for r in rows] == [(i, False) for i in range(5)] + [(4, True)]
    assert {r["status"] for r in rows} == {"AUTHORITATIVE"}
    for row, event in zip(rows, events, strict=False):
        assert bytes(row["record"]) == rfc8785.dumps(event)
        assert row["hash"] == event["hash"]
    assert json.loads(bytes(rows[-1]["record"])) == seal


async def test_non_canonical_input_is_stored_canonically(
    db: Database, client: httpx.AsyncClient
) -> None:
    chain = Chain(
        payload=lambda seq: {"z": 1.0, "a": "é\u2028", "n": 1e21, "nested": {"b": [], "a": 0}}
    )
    events = chain.make(2)
    # Reordered members, escapes and whitespace: the same JSON values.
    text = json.dumps(
        {"events": [dict(reversed(list(e.items()))) for e in events]}, ensure_ascii=True, indent=3
    )
    response = await client.post("/v1/ingest", content=text.encode(), headers=JSON)
    assert response.status_code == 200, response.text
    rows = await stored_rows(db, chain.session_id)
    assert bytes(rows[0]["record"]) == rfc8785.dumps(events[0])
    assert b'"n":1e+21' in bytes(rows[0]["record"]) and b'"z":1' in bytes(rows[0]["record"])


async def test_seals_chain_across_batches(client: httpx.AsyncClient) -> None:
    chain = Chain()
    keys = await public_keys(client)
    seals = []
    for batch in chain.batches(3, 4):
        seals.append((await post(client, batch))["seal"])
    for i, seal in enumerate(seals):
        check_seal(seal, keys)
        assert seal["payload"]["first_seq"] == 4 * i
        assert seal["seq"] == 4 * i + 3
        assert seal["payload"]["prev_seal"] == (seals[i - 1]["hash"] if i else ZERO)


async def test_same_batch_twice_writes_once_and_returns_the_same_seal(
    db: Database, client: httpx.AsyncClient
) -> None:
    chain = Chain()
    events = chain.make(4)
    first = await post(client, events)
    again = await post(client, events)
    assert (again["accepted"], again["duplicates"], again["duplicate"]) == (0, 4, True)
    assert again["seal"] == first["seal"]
    assert again["head"] == first["head"]
    assert len(await stored_rows(db, chain.session_id)) == 5


async def test_retry_of_an_older_batch_returns_the_seal_that_covers_it(
    client: httpx.AsyncClient,
) -> None:
    chain = Chain()
    first_batch = chain.make(3)
    first = await post(client, first_batch)
    await post(client, chain.make(3))
    again = await post(client, first_batch[1:])
    assert again["duplicate"] is True
    assert again["seal"] == first["seal"]


async def test_overlapping_batch_appends_only_the_new_part(
    db: Database, client: httpx.AsyncClient
) -> None:
    chain = Chain()
    chain.make(6)
    await post(client, chain.events[:4])
    body = await post(client, chain.events[2:6])
    assert (body["accepted"], body["duplicates"], body["duplicate"]) == (2, 2, False)
    assert body["seal"]["payload"]["first_seq"] == 4
    assert body["seal"]["seq"] == 5
    rows = await stored_rows(db, chain.session_id)
    events = [r["seq"] for r in rows if not r["is_seal"]]
    assert events == list(range(6))
    assert [r["seq"] for r in rows if r["is_seal"]] == [3, 5]


async def test_a_stale_remembered_head_falls_back_to_judging_under_the_lock(
    db: Database, make_key: MakeKey, tmp_path: Any
) -> None:
    """The actor's remembered head can be stale (another process wrote): the
    one-statement write refuses it and the full commit judges the batch."""
    append = (await direct_committer(db, make_key)).append
    chain = Chain()
    first, h1 = await append(chain.make(3), None)
    assert isinstance(first, Appended)
    assert h1 is not None
    mine = chain.make(3)
    # Another writer appends seq 3..5 (a different continuation) first.
    theirs = relink([{**e, "kind": "other.writer"} for e in mine], chain.events[2]["hash"])
    written, h2 = await append(theirs, None)
    assert isinstance(written, Appended)
    assert h2 != h1

    # This process still believes in h1: its batch is refused as a fork, not written.
    outcome, head = await append(mine, h1)
    assert isinstance(outcome, Conflict)
    assert (outcome.code, outcome.index, outcome.next_seq) == ("chain_fork", 0, 6)
    assert head == h2
    # Their batch again, through the stale head: recognised as a retry.
    again, _ = await append(theirs, h1)
    assert isinstance(again, Appended)
    assert again.duplicate
    assert again.seal == written.seal
    rows = await stored_rows(db, chain.session_id)
    assert [r["kind"] for r in rows if not r["is_seal"]][3:] == ["other.writer"] * 3


@pytest.mark.parametrize("size", ["small", "large"])
async def test_small_and_large_bodies_are_verified_alike(
    client: httpx.AsyncClient, size: str
) -> None:
    """Bodies up to 128 KiB are verified on the event loop, larger ones in a
    worker thread (api/ingest.py): the same answers either way."""
    n, pad = (5, 10) if size == "small" else (400, 600)
    chain = Chain(payload=lambda seq: {"seq": seq, "text": "x" * pad})
    good = chain.make(n)
    assert (len(body_of(good)) > 128 * 1024) == (size == "large")
    assert (await post(client, good))["accepted"] == n
    forged = chain.make(n)
    forged[n - 1]["payload"]["text"] = "y" * pad
    response = await client.post("/v1/ingest", content=body_of(forged), headers=JSON)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["index"]) == ("hash_mismatch", n - 1)
