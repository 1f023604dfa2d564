"""GET /v1/sessions/{id}/records (PROTOCOL §5): exact, canonical, ordered, paged,
streamed from a cursor that a departing client releases at once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
import rfc8785
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import hashcore
from service.config import Settings
from service.core.outcomes import Appended
from service.storage import sessions
from service.storage.database import Connection, Database

from .chain import ZERO, Chain, body_of, event_hash
from .conftest import Server, start_server
from .support import JSON, direct_committer


def rich_payload(seq: int) -> dict[str, Any]:
    """Content whose canonical form differs from a naive dump: unicode, floats,
    exponents, negative zero, unsorted members."""
    return {
        "z": seq,
        "text": f"Zürich ☃ \u2028 \U0001f600 «{seq}»",
        "score": seq / 7,
        "tiny": 5e-324,
        "nested": {"b": [1.0, -0.0, 1e21], "a": None},
    }


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/ingest", content=body_of(events), headers=JSON)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lines_of(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n")
    return body[:-1].split(b"\n")


def as_double(literal: str) -> int | float:
    """PROTOCOL §6: numbers are doubles; an integer above 2^53 came from one."""
    value = int(literal)
    return value if abs(value) <= 2**53 - 1 else float(value)


def parse(line: bytes) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line, parse_int=as_double)
    return record


def public_key(entry: dict[str, Any]) -> Ed25519PublicKey:
    assert entry["alg"] == "Ed25519"
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["public_key"]))


async def replay(client: httpx.AsyncClient, session_id: str, **params: int) -> bytes:
    response = await client.get(f"/v1/sessions/{session_id}/records", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return response.content


async def test_replay_returns_each_record_canonical_and_exactly_as_sent(
    server: Server, make_key: Any
) -> None:
    chain = Chain(payload=rich_payload)
    batches = [chain.make(5), chain.make(1), chain.make(7), chain.make(3)]
    async with server.client(await make_key("acme", "ingest", "read")) as client:
        seals = [(await ingest(client, b))["seal"] for b in batches]
        # A retry of the second batch stores nothing new.
        assert (await ingest(client, batches[1]))["duplicate"] is True
        keys = (await client.get("/v1/keys")).json()["keys"]
        first = await replay(client, chain.session_id)
        second = await replay(client, chain.session_id)

    assert first == second
    lines = lines_of(first)
    assert len(lines) == 16 + 4
    for line in lines:
        assert hashcore.canonicalize(line) == line
        assert rfc8785.dumps(parse(line)) == line

    # By seq, each seal right after the last event of its batch.
    records = [parse(line) for line in lines]
    expected_order: list[tuple[int, str]] = []
    for batch in batches:
        expected_order += [(e["seq"], "llm.call") for e in batch]
        expected_order.append((batch[-1]["seq"], "CHAIN_SEAL"))
    assert [(r["seq"], r["kind"]) for r in records] == expected_order

    # The events, concatenated, are the sent events' canonical bytes and hashes.
    event_lines = [
        line for line, r in zip(lines, records, strict=True) if r["kind"] != "CHAIN_SEAL"
    ]
    sent = b"".join(rfc8785.dumps(e) for e in chain.events)
    assert hashlib.sha256(b"".join(event_lines)).digest() == hashlib.sha256(sent).digest()
    assert [parse(line)["hash"] for line in event_lines] == [e["hash"] for e in chain.events]

    # Seals: the ones ingest answered, recomputing, signed by a key of /v1/keys.
    public = {k["key_id"]: public_key(k) for k in keys}
    seal_records = [r for r in records if r["kind"] == "CHAIN_SEAL"]
    assert seal_records == seals
    prev_seal = ZERO
    for seal, batch in zip(seal_records, batches, strict=True):
        assert seal["hash"] == event_hash(seal)
        assert seal["prev_hash"] == batch[-1]["hash"]
        assert seal["payload"]["first_seq"] == batch[0]["seq"]
        assert seal["payload"]["prev_seal"] == prev_seal
        prev_seal = seal["hash"]
        key = public[seal["payload"]["key_id"]]
        key.verify(bytes.fromhex(seal["signature"]), bytes.fromhex(seal["hash"]))


async def test_number_above_2_53_from_a_double_replays_as_jcs_writes_it(
    server: Server, make_key: Any
) -> None:
    # Sent as 3.749565844198488e+17 (a double); JCS writes it as an integer literal.
    chain = Chain(payload=lambda seq: {"big": 3.749565844198488e17, "seq": seq})
    async with server.client(await make_key()) as client:
        await ingest(client, chain.make(2))
        lines = lines_of(await replay(client, chain.session_id))
        report = (await client.get(f"/v1/sessions/{chain.session_id}/verify")).json()
    assert b'"big":374956584419848800' in lines[0]
    assert [rfc8785.dumps(parse(line)) for line in lines] == lines
    assert [parse(line)["hash"] for line in lines[:2]] == [e["hash"] for e in chain.events]
    assert report["ok"] is True, report


async def test_pages_of_from_seq_and_limit_join_up_to_the_whole(
    server: Server, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        for size in (3, 1, 4, 2, 5):
            await ingest(client, chain.make(size))
        whole = lines_of(await replay(client, chain.session_id))
        assert len(whole) == 15 + 5

        # from_seq keeps seq >= N (an event and its seal share a seq); limit caps lines.
        for from_seq, limit in ((0, 1), (3, 2), (4, 3), (7, 100), (14, 5)):
            page = lines_of(await replay(client, chain.session_id, from_seq=from_seq, limit=limit))
            assert page == [line for line in whole if parse(line)["seq"] >= from_seq][:limit]
        past_end = await client.get(
            f"/v1/sessions/{chain.session_id}/records", params={"from_seq": 15}
        )
        assert past_end.status_code == 200
        assert past_end.content == b""

        # A client paging through: resume at the last seq, dropping the event it
        # already has when a page ended between an event and its seal.
        for limit in (2, 3, 7):
            joined: list[bytes] = []
            from_seq = 0
            while True:
                page = lines_of(
                    await replay(client, chain.session_id, from_seq=from_seq, limit=limit) or b"\n"
                )
                page = [line for line in page if line]
                if joined and page and page[0] == joined[-1]:
                    page = page[1:]
                if not page:
                    break
                joined += page
                last = parse(page[-1])
                from_seq = last["seq"] + (last["kind"] == "CHAIN_SEAL")
            assert joined == whole


async def test_unknown_session_other_tenant_and_bad_arguments(
    server: Server, make_key: Any
) -> None:
    chain = Chain()
    async with server.client(await make_key("acme")) as acme:
        await ingest(acme, chain.make(2))
    path = f"/v1/sessions/{chain.session_id}/records"
    async with server.client(await make_key("globex")) as globex:
        response = await globex.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    async with server.client(await make_key("acme", "read")) as reader:
        assert (await reader.get(f"/v1/sessions/{Chain().session_id}/records")).status_code == 404
        assert (await reader.get("/v1/sessions/not-a-uuid/records")).status_code == 404
        upper = chain.session_id.upper()
        assert (await reader.get(f"/v1/sessions/{upper}/records")).status_code == 404
        for params in ({"from_seq": "-1"}, {"limit": "0"}, {"limit": "x"}):
            bad = await reader.get(path, params=params)
            assert bad.status_code == 400
            assert bad.json()["code"] == "bad_parameter"
        assert (await reader.get(path)).status_code == 200
    async with server.client(await make_key("acme", "ingest")) as writer:
        assert (await writer.get(path)).status_code == 403
    async with server.client() as anonymous:
        assert (await anonymous.get(path)).status_code == 401


# ---- a departing client ---------------------------------------------------------


async def _busy_backends(db: Database) -> list[str]:
    """Other connections to our database inside a transaction or a statement."""

    async def work(conn: Connection) -> list[str]:
        rows = await conn.fetch(
            """SELECT state || ': ' || left(query, 60) AS what FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND (xact_start IS NOT NULL OR state <> 'idle')"""
        )
        return [r["what"] for r in rows]

    return await db.run(work)


async def _until(check: Any, what: str) -> None:
    with trio.move_on_after(15):
        while not await check():
            await trio.sleep(0.02)
        return
    pytest.fail(f"not reached in 15 s: {what}")


async def test_client_leaving_mid_replay_frees_cursor_and_connection(
    db: Database, settings: Settings, nursery: trio.Nursery, make_key: Any
) -> None:
    server = await start_server(nursery, replace(settings, replay_chunk=20))
    key = await make_key()
    chain = Chain(payload=lambda seq: {"text": "x" * 400, "seq": seq})
    async with server.client(key) as client:
        for _ in range(4):
            await ingest(client, chain.make(1000))
    stats = server.runtime.db.statistics
    assert stats()["in_use"] == 0

    async def streaming() -> bool:
        return any("octet_length(record)" in b for b in await _busy_backends(db))

    async def released() -> bool:
        return stats()["in_use"] == 0 and not await _busy_backends(db)

    # A raw socket with a small window, so that the ~2 MB response cannot sit in
    # kernel buffers: the server is truly mid-stream when the client leaves.
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    host, port = server.url.removeprefix("http://").split(":")
    await sock.connect((host, int(port)))
    path = f"/v1/sessions/{chain.session_id}/records"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    await sock.send(request.encode())
    received = b""
    while len(received) < 8192:
        received += await sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    await _until(streaming, "the replay's cursor is open")
    assert stats()["in_use"] == 1
    sock.close()

    await _until(released, "the cursor, transaction and connection are released")

    # And the next replay is whole: nothing was left holding the stream slots.
    async with server.client(key) as client:
        assert len(lines_of(await replay(client, chain.session_id))) == 4000 + 4


async def committed_batches(
    db: Database, make_key: Any, chain: Chain, batches: int, events: int
) -> tuple[int, list[bytes]]:
    """`batches` batches of `events` of `chain` committed straight to the
    database: the tenant's id, and the session's stored records in replay order."""
    committer = await direct_committer(db, make_key)
    for _ in range(batches):
        outcome, _ = await committer.append(chain.make(events))
        assert isinstance(outcome, Appended)
    rows = await db.run(
        lambda conn: conn.fetch(
            "SELECT record FROM records WHERE session_id = $1 ORDER BY seq, is_seal",
            chain.session_id,
        )
    )
    return committer.tenant_id, [bytes(r[0]) for r in rows]


async def test_a_read_holds_a_bounded_number_of_bytes_whatever_the_records_size(
    db: Database, make_key: Any
) -> None:
    """Issue 10: replays were bounded in rows, not bytes, so a session of large
    records could push a worker's memory far past its ceiling."""
    chain = Chain(payload=lambda seq: {"blob": "x" * (600_000 if seq % 3 == 0 else 50)})
    tenant_id, expected = await committed_batches(db, make_key, chain, 3, 6)
    largest = max(len(r) for r in expected)
    assert largest > 600_000 and len(expected) == 18 + 3
    max_bytes = 256 * 1024
    got: list[bytes] = []
    async with db.records(
        sessions.CHAIN,
        tenant_id,
        chain.session_id,
        18,
        by_key=sessions.BY_KEY,
        chunk=1000,
        max_bytes=max_bytes,
    ) as fetch:
        while records := await fetch():
            # Under the bound, but for the record that crossed it.
            assert sum(len(r) for r in records[:-1]) < max_bytes
            got.extend(records)
    assert got == expected


@pytest.mark.parametrize(
    ("chunk", "max_bytes", "blob"),
    [
        (1000, 1 << 20, 0),
        (4, 1 << 20, 0),
        (1000, 700, 0),
        (5, 700, 0),
        (1, 1, 0),
        # A cursor read that fits, after one cut by bytes left rows over.
        (5, 3500, 3000),
    ],
    ids=["one-read", "by-rows", "by-bytes", "rows-and-bytes", "one-at-a-time", "rows-left-over"],
)
async def test_reads_of_small_records_split_by_rows_and_bytes_and_join_up(
    db: Database, make_key: Any, chunk: int, max_bytes: int, blob: int
) -> None:
    """The common case, every record under INLINE_BYTES, is handed out a cursor
    read at a time when the read fits: the same records, in order, each read
    within its row and byte bounds (but for the record that crossed the last).
    With `blob`, every tenth event carries that many bytes more."""
    chain = Chain(payload=lambda seq: {"blob": "x" * (blob if seq % 10 == 0 else 1)})
    tenant_id, expected = await committed_batches(db, make_key, chain, 3, 7)
    assert len(expected) == 21 + 3 and max(map(len, expected)) < sessions.INLINE_BYTES
    reads: list[list[bytes]] = []
    async with db.records(
        sessions.CHAIN,
        tenant_id,
        chain.session_id,
        21,
        by_key=sessions.BY_KEY,
        chunk=chunk,
        max_bytes=max_bytes,
    ) as fetch:
        while records := await fetch():
            assert len(records) <= chunk
            assert sum(len(r) for r in records[:-1]) < max_bytes
            reads.append(records)
    assert [r for read in reads for r in read] == expected
    if max_bytes < sum(map(len, expected)) or chunk < len(expected):
        assert len(reads) > 1
    else:
        assert len(reads) == 1
