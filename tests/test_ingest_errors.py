"""Every row of PROTOCOL §3's error table, each leaving the database unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from service.storage.database import Connection, Database

from .chain import ZERO, Chain, body_of, event_hash, relink
from .conftest import Server
from .support import JSON, MakeKey


async def snapshot(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async def work(conn: Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        records = await conn.fetch(
            "SELECT tenant_id, session_id, seq, is_seal, hash, record, status FROM records "
            "ORDER BY tenant_id, session_id, seq, is_seal"
        )
        sessions = await conn.fetch("SELECT * FROM sessions ORDER BY tenant_id, session_id")
        return [tuple(r) for r in records], [tuple(s) for s in sessions]

    return await db.run(work)


@pytest.fixture
async def stored(
    server: Server, make_key: MakeKey
) -> AsyncIterator[tuple[httpx.AsyncClient, Chain]]:
    """A client with an ingest+read key, and a session holding 3 stored events."""
    async with server.client(await make_key("acme", "ingest", "read")) as client:
        chain = Chain()
        response = await client.post("/v1/ingest", content=body_of(chain.make(3)), headers=JSON)
        assert response.status_code == 200
        yield client, chain


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"] and body["detail"]
    return body


async def rejected(
    db: Database,
    client: httpx.AsyncClient,
    content: bytes,
    status: int,
    code: str,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    before = await snapshot(db)
    response = await client.post("/v1/ingest", content=content, headers=headers or JSON)
    body = assert_problem(response, status, code)
    assert await snapshot(db) == before, "a rejected batch changed the database"
    return body


# ---- 400: the body breaks §1/§2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"events": [', "malformed_json"),
        (b"", "malformed_json"),
        (b'{"events": [1]', "malformed_json"),
        (b'{"events": []}', "schema"),
        (b'{"events": {}}', "schema"),
        (b'{"batch": []}', "schema"),
        (b'{"events": [{"a": 1, "a": 2}]}', "json_rule"),
        (b'{"events": ["\\ud800"]}', "json_rule"),
        (b'{"events": [9007199254740993]}', "json_rule"),
        (b'{"events": [1e999]}', "json_rule"),
        (b'{"events": ["\xff"]}', "json_rule"),
        (b'{"events": ' + b"[" * 64 + b"]" * 64 + b"}", "json_rule"),
    ],
)
async def test_body_breaks_json_rules(
    db: Database, stored: tuple[httpx.AsyncClient, Chain], content: bytes, code: str
) -> None:
    client, _ = stored
    await rejected(db, client, content, 400, code)


@pytest.mark.parametrize(
    ("edit", "member"),
    [
        (lambda e: e.pop("ts"), "ts"),
        (lambda e: e.update(extra=1), "extra"),
        (lambda e: e.update(seq=-1), "seq"),
        (lambda e: e.update(seq="3"), "seq"),
        (lambda e: e.update(session_id=e["session_id"].upper()), "session_id"),
        (lambda e: e.update(kind="has space"), "kind"),
        (lambda e: e.update(ts="2026-11-27 10:00:00Z"), "ts"),
        (lambda e: e.update(ts="2026-02-30T10:00:00Z"), "ts"),
        (lambda e: e.update(payload=[1, 2]), "payload"),
        (lambda e: e.update(prev_hash="AB" * 32), "prev_hash"),
        (lambda e: e.update(hash="0" * 63), "hash"),
    ],
)
async def test_event_breaks_the_schema(
    db: Database, stored: tuple[httpx.AsyncClient, Chain], edit: Any, member: str
) -> None:
    client, chain = stored
    events = chain.make(2)
    edit(events[1])
    body = await rejected(db, client, body_of(events), 400, "schema")
    assert body["index"] == 1
    assert body["member"] == member
    assert "1" in body["detail"] and member in body["detail"]


# ---- 400: the batch is inconsistent in itself -------------------------------------------


async def test_hash_mismatch_names_index_expected_and_got(
    db: Database, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    client, chain = stored
    events = chain.make(3)
    events[1]["payload"]["tokens"] += 1  # content changed, hash not recomputed
    body = await rejected(db, client, body_of(events), 400, "hash_mismatch")
    assert body["index"] == 1
    assert body["got"] == events[1]["hash"]
    assert body["expected"] == event_hash(events[1])


async def test_broken_link(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    events = chain.make(3)
    events[2] = relink([events[2]], "f" * 64)[0]  # self-consistent, but linked elsewhere
    body = await rejected(db, client, body_of(events), 400, "broken_link")
    assert body["index"] == 2
    assert body["expected"] == events[1]["hash"]
    assert body["got"] == "f" * 64


async def test_first_event_of_a_session_must_link_to_zeros(
    db: Database, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    client, _ = stored
    fresh = Chain()
    events = relink(fresh.make(2), "a" * 64)
    body = await rejected(db, client, body_of(events), 400, "broken_link")
    assert body["index"] == 0


async def test_seq_not_contiguous(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    events = chain.make(3)
    events[2] = relink([{**events[2], "seq": 7}], events[1]["hash"])[0]
    body = await rejected(db, client, body_of(events), 400, "seq_not_contiguous")
    assert body["index"] == 2


async def test_mixed_sessions(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    events = chain.make(2)
    other = Chain().session_id
    events[1] = relink([{**events[1], "session_id": other}], events[0]["hash"])[0]
    body = await rejected(db, client, body_of(events), 400, "mixed_sessions")
    assert body["index"] == 1


async def test_reserved_kind(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    events = chain.make(2)
    events[1] = relink([{**events[1], "kind": "CHAIN_SEAL"}], events[0]["hash"])[0]
    body = await rejected(db, client, body_of(events), 400, "reserved_kind")
    assert body["index"] == 1


# ---- 401, 403, 404 ------------------------------------------------------------------


async def test_unauthenticated(
    db: Database, server: Server, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    _, chain = stored
    body = body_of(chain.make(1))
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Bearer csk_0123456789abcdef_" + "A" * 43},
    ):
        async with server.client() as anonymous:
            response = await rejected(db, anonymous, body, 401, "unauthenticated", headers | JSON)
            assert response["status"] == 401


async def test_forbidden_without_the_scope(
    db: Database, server: Server, make_key: MakeKey, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    _, chain = stored
    async with server.client(await make_key("acme", "read")) as reader:
        await rejected(db, reader, body_of(chain.make(1)), 403, "forbidden")


async def test_authentication_comes_before_size_and_parsing(
    db: Database, server: Server, make_key: MakeKey
) -> None:
    async with server.client() as anonymous:
        await rejected(db, anonymous, b"not json", 401, "unauthenticated", {"Content-Type": "x/y"})


async def test_unknown_session_is_not_found(stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, _ = stored
    for path in ("", "/records", "/verify"):
        response = await client.get(f"/v1/sessions/{Chain().session_id}{path}")
        assert_problem(response, 404, "not_found")
    assert_problem(await client.get("/v1/sessions/not-a-uuid"), 404, "not_found")


# ---- 409: the batch does not continue the stored chain ----------------------------------


async def test_seq_gap_carries_the_head(
    db: Database, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    client, chain = stored
    chain.make(2)  # made, never sent
    body = await rejected(db, client, body_of(chain.make(2)), 409, "seq_gap")
    assert body["next_seq"] == 3
    assert body["head_hash"] == chain.events[2]["hash"]


async def test_seq_gap_on_a_new_session(
    db: Database, stored: tuple[httpx.AsyncClient, Chain]
) -> None:
    client, _ = stored
    fresh = Chain()
    fresh.make(1)
    body = await rejected(db, client, body_of(fresh.make(1)), 409, "seq_gap")
    assert body["next_seq"] == 0
    assert body["head_hash"] == ZERO


async def test_fork_at_the_head(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    fork = relink(chain.make(2), "e" * 64)  # seq 3.. but linked to another head
    body = await rejected(db, client, body_of(fork), 409, "chain_fork")
    assert body["next_seq"] == 3
    assert body["head_hash"] == chain.events[2]["hash"]


async def test_fork_below_the_head(db: Database, stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    rewritten = [json.loads(json.dumps(e)) for e in chain.events[:3]]
    rewritten[1]["payload"]["input"] = "rewritten history"
    rewritten = relink(rewritten, ZERO)
    body = await rejected(db, client, body_of(rewritten), 409, "chain_fork")
    assert body["index"] == 1
    assert body["next_seq"] == 3


# ---- 413, 415 --------------------------------------------------------------------------


async def test_too_many_events(
    db: Database, server: Server, make_key: MakeKey, settings: Any
) -> None:
    async with server.client(await make_key()) as client:
        events = Chain().make(settings.max_batch_events + 1)
        await rejected(db, client, body_of(events), 413, "too_large")


async def raw_post(server: Server, key: str, head_extra: str, body_parts: list[bytes]) -> bytes:
    """POST over a bare socket, sending only `body_parts`, and read what comes back."""
    host, port = server.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        head = (
            f"POST /v1/ingest HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\n{head_extra}\r\n"
        )
        try:
            await stream.send_all(head.encode())
            for part in body_parts:
                await stream.send_all(part)
        except trio.BrokenResourceError:
            pass  # the server may answer and close before the whole body is sent
        response = b""
        with trio.fail_after(20):
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                response += chunk
    return response


async def test_body_too_large_is_refused_before_it_is_read(
    db: Database, server: Server, make_key: MakeKey, settings: Any
) -> None:
    key = await make_key()
    before = await snapshot(db)
    # Declared too large: answered at once, though only 1 KiB of the body was sent.
    declared = settings.max_body_bytes + 1
    response = await raw_post(server, key, f"Content-Length: {declared}\r\n", [b"{" * 1024])
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"code":"too_large"' in response
    assert await snapshot(db) == before


async def test_chunked_body_over_the_limit_is_refused(
    db: Database, server: Server, make_key: MakeKey, settings: Any
) -> None:
    key = await make_key()
    before = await snapshot(db)
    piece = b"x" * (1024 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    n = settings.max_body_bytes // len(piece) + 2
    response = await raw_post(server, key, "Transfer-Encoding: chunked\r\n", [chunk] * n)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"code":"too_large"' in response
    assert await snapshot(db) == before


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_unsupported_media_type(
    db: Database, stored: tuple[httpx.AsyncClient, Chain], ctype: str | None
) -> None:
    client, chain = stored
    headers = {"Content-Type": ctype} if ctype else {"Content-Type": ""}
    await rejected(db, client, body_of(chain.make(1)), 415, "unsupported_media_type", headers)


async def test_charset_parameter_is_accepted(stored: tuple[httpx.AsyncClient, Chain]) -> None:
    client, chain = stored
    response = await client.post(
        "/v1/ingest",
        content=body_of(chain.make(1)),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
