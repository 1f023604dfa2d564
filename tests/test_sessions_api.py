"""GET /v1/sessions/{id} (head), GET /v1/sessions (keyset listing) and
GET /v1/sessions/{id}/verify (the server re-verifies the stored chain)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from service.storage.database import Connection, Database

from .chain import Chain, body_of
from .conftest import Server
from .support import JSON


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/ingest", content=body_of(events), headers=JSON)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_session(client: httpx.AsyncClient, events: int = 2) -> Chain:
    chain = Chain()
    await ingest(client, chain.make(events))
    return chain


async def execute(db: Database, sql: str, *args: object) -> str:
    async def work(conn: Connection) -> str:
        return await conn.execute(sql, *args)

    return await db.run(work)


async def stored_record(db: Database, session_id: str, seq: int, is_seal: bool) -> bytes:
    async def work(conn: Connection) -> bytes:
        return bytes(
            await conn.fetchval(
                "SELECT record FROM records WHERE session_id = $1 AND seq = $2 AND is_seal = $3",
                session_id,
                seq,
                is_seal,
            )
        )

    return await db.run(work)


async def overwrite(db: Database, session_id: str, seq: int, is_seal: bool, record: bytes) -> None:
    status = await execute(
        db,
        "UPDATE records SET record = $4 WHERE session_id = $1 AND seq = $2 AND is_seal = $3",
        session_id,
        seq,
        is_seal,
        record,
    )
    assert status == "UPDATE 1"


# ---- head -------------------------------------------------------------------------


async def test_head_reports_next_seq_head_hash_last_seal_counts_and_times(
    server: Server, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        await ingest(client, chain.make(3))
        second = await ingest(client, chain.make(4))
        response = await client.get(f"/v1/sessions/{chain.session_id}")
        replayed = (await client.get(f"/v1/sessions/{chain.session_id}/records")).content
    assert response.status_code == 200
    head = response.json()
    assert head["session_id"] == chain.session_id
    assert head["next_seq"] == 7
    assert head["head_hash"] == chain.events[-1]["hash"]
    assert head["events"] == 7
    assert head["seals"] == 2
    assert head["first_event_ts"] == chain.events[0]["ts"]
    assert head["last_event_ts"] == chain.events[-1]["ts"]
    assert head["last_seal"] == second["seal"]
    # The seal goes out byte for byte as stored: the last line of a replay.
    last_line = replayed.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert b'"last_seal":' + last_line in response.content


async def test_head_is_404_for_unknown_sessions_and_other_tenants(
    server: Server, make_key: Any
) -> None:
    async with server.client(await make_key("acme")) as acme:
        chain = await new_session(acme)
        assert (await acme.get(f"/v1/sessions/{Chain().session_id}")).status_code == 404
        assert (await acme.get("/v1/sessions/nope")).status_code == 404
    async with server.client(await make_key("globex", "read")) as globex:
        for path in ("", "/records", "/verify"):
            response = await globex.get(f"/v1/sessions/{chain.session_id}{path}")
            assert response.status_code == 404, path
            assert response.json()["code"] == "not_found"
    async with server.client(await make_key("acme", "ingest")) as writer:
        assert (await writer.get(f"/v1/sessions/{chain.session_id}")).status_code == 403


# ---- listing ------------------------------------------------------------------------


async def pages(client: httpx.AsyncClient, limit: int) -> list[list[str]]:
    out: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/sessions", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        out.append([s["session_id"] for s in body["sessions"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


async def test_listing_is_the_tenants_sessions_newest_first_in_keyset_pages(
    server: Server, make_key: Any
) -> None:
    async with server.client(await make_key("acme")) as acme:
        created = [(await new_session(acme, n)).session_id for n in (1, 2, 3, 4, 5)]
        async with server.client(await make_key("globex")) as globex:
            await new_session(globex)
            assert len((await globex.get("/v1/sessions")).json()["sessions"]) == 1

        newest_first = created[::-1]
        assert await pages(acme, 2) == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
        assert await pages(acme, 5) == [newest_first, []]
        assert await pages(acme, 50) == [newest_first]

        whole = (await acme.get("/v1/sessions")).json()["sessions"]
        assert [(s["session_id"], s["events"], s["seals"]) for s in whole] == [
            (sid, n, 1) for sid, n in zip(newest_first, (5, 4, 3, 2, 1), strict=True)
        ]

        # A keyset cursor, not an offset: a session created between two pages
        # neither repeats nor hides an item of the pages that follow.
        first = (await acme.get("/v1/sessions", params={"limit": 2})).json()
        newer = (await new_session(acme)).session_id
        rest = (
            await acme.get("/v1/sessions", params={"limit": 3, "cursor": first["next_cursor"]})
        ).json()
        assert [s["session_id"] for s in first["sessions"] + rest["sessions"]] == newest_first
        fresh = (await acme.get("/v1/sessions", params={"limit": 1})).json()
        assert [s["session_id"] for s in fresh["sessions"]] == [newer]


async def test_listing_rejects_bad_cursors_and_limits(server: Server, make_key: Any) -> None:
    async with server.client(await make_key("acme", "read")) as client:
        for params in (
            {"cursor": "not-a-cursor"},
            {"cursor": "bm90fGEtdXVpZA"},  # "not|a-uuid"
            {"limit": "0"},
            {"limit": "501"},
            {"limit": "ten"},
        ):
            response = await client.get("/v1/sessions", params=params)
            assert response.status_code == 400, params
            assert response.json()["code"] == "bad_parameter"
        empty = await client.get("/v1/sessions")
        assert empty.json() == {"sessions": [], "next_cursor": None}
    async with server.client() as anonymous:
        assert (await anonymous.get("/v1/sessions")).status_code == 401


# ---- verify -------------------------------------------------------------------------


async def test_verify_reports_a_sound_chain(server: Server, make_key: Any) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        for size in (3, 4, 5):
            await ingest(client, chain.make(size))
        response = await client.get(f"/v1/sessions/{chain.session_id}/verify")
    assert response.status_code == 200
    assert response.json() == {
        "session_id": chain.session_id,
        "ok": True,
        "records": 15,
        "events": 12,
        "seals": 3,
        "keys_used": [server.runtime.signer.key_id],
        "problem": None,
    }


async def test_verify_names_a_record_tampered_in_the_database(
    server: Server, db: Database, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        for _ in range(3):
            await ingest(client, chain.make(4))
        sid = chain.session_id
        # One byte of event 6's payload: "question 6" -> "Question 6".
        record = bytearray(await stored_record(db, sid, 6, False))
        record[record.index(b"question 6")] = ord("Q")
        await overwrite(db, sid, 6, False, bytes(record))
        report = (await client.get(f"/v1/sessions/{sid}/verify")).json()
    assert report["ok"] is False
    problem = report["problem"]
    # Line 8: events 0-3, seal 3, events 4-5, then event 6.
    assert (problem["line"], problem["seq"], problem["kind"]) == (8, 6, "llm.call")
    assert problem["reason"] == "hash_mismatch"
    assert problem["found"] == chain.events[6]["hash"]
    assert problem["expected"] != chain.events[6]["hash"]


async def test_verify_names_a_seal_whose_signature_was_altered(
    server: Server, db: Database, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        await ingest(client, chain.make(2))
        await ingest(client, chain.make(2))
        sid = chain.session_id
        seal = json.loads(await stored_record(db, sid, 3, True))
        seal["signature"] = ("1" if seal["signature"][0] == "0" else "0") + seal["signature"][1:]
        await overwrite(db, sid, 3, True, json.dumps(seal, separators=(",", ":")).encode())
        report = (await client.get(f"/v1/sessions/{sid}/verify")).json()
    assert report["ok"] is False
    problem = report["problem"]
    assert (problem["seq"], problem["kind"], problem["reason"]) == (
        3,
        "CHAIN_SEAL",
        "bad_signature",
    )


async def test_verify_notices_records_missing_at_the_end(
    server: Server, db: Database, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        await ingest(client, chain.make(3))
        await ingest(client, chain.make(3))
        # Without its last batch the chain still verifies; the head row says more.
        status = await execute(
            db, "DELETE FROM records WHERE session_id = $1 AND seq >= 3", chain.session_id
        )
        assert status == "DELETE 4"
        report = (await client.get(f"/v1/sessions/{chain.session_id}/verify")).json()
    assert report["ok"] is False
    assert (report["records"], report["events"], report["seals"]) == (4, 3, 1)
    assert report["problem"]["reason"] == "count_mismatch"
    assert report["problem"]["expected"] == "6 events, 2 seals"


async def test_verify_sees_the_chain_of_one_head_while_batches_land(
    server: Server, make_key: Any
) -> None:
    chain = Chain()
    key = await make_key()
    async with server.client(key) as client:
        await ingest(client, chain.make(50))
        reports: list[dict[str, Any]] = []

        async def keep_verifying() -> None:
            for _ in range(10):
                response = await client.get(f"/v1/sessions/{chain.session_id}/verify")
                reports.append(response.json())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_verifying)
            for _ in range(10):
                await ingest(client, chain.make(50))
    assert all(r["ok"] for r in reports), [r["problem"] for r in reports if not r["ok"]]
    assert all(r["records"] == r["events"] + r["seals"] for r in reports)
