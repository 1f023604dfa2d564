"""Hostile and careless requests that once got a 500, a redirect, an empty body or a
kept-alive connection: each now gets a precise problem+json, and nothing else."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from service.storage import tenants

from .chain import Chain, body_of
from .conftest import Server
from .support import JSON, MakeKey, assert_problem

# ---- query parameters ---------------------------------------------------------------

# Digits to str.isdigit() but not to int(); int()-able but not ASCII; too long.
NOT_NUMBERS = ["²", "¹", "１２", "١٢", "𝟙", "1" * 5001, "1" * 17, " 1", "+1", "1_0"]


@pytest.mark.parametrize("value", NOT_NUMBERS)
async def test_only_bounded_ascii_digits_are_numbers(
    server: Server, make_key: MakeKey, value: str
) -> None:
    chain = Chain()
    async with server.client(await make_key("acme", "ingest", "read")) as client:
        stored = await client.post("/v1/ingest", content=body_of(chain.make(1)), headers=JSON)
        assert stored.status_code == 200
        records = f"/v1/sessions/{chain.session_id}/records"
        for path, name in (
            (records, "from_seq"),
            (records, "limit"),
            ("/v1/sessions", "limit"),
        ):
            response = await client.get(path, params={name: value})
            body = assert_problem(response, 400, "bad_parameter")
            assert body["parameter"] == name


def cursor(stamp: str, session_id: str = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b") -> str:
    return base64.urlsafe_b64encode(f"{stamp}|{session_id}".encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        cursor("0001-01-01T00:00:00+14:00"),  # year 0 in UTC
        cursor("9999-12-31T23:00:00-14:00"),  # year 10000 in UTC
        cursor("2026-01-01T00:00:00"),  # no offset: which instant?
        "A" * 10_000,
    ],
)
async def test_listing_cursors_outside_the_databases_range_are_refused(
    server: Server, make_key: MakeKey, token: str
) -> None:
    async with server.client(await make_key("acme", "read")) as client:
        response = await client.get("/v1/sessions", params={"cursor": token})
        assert assert_problem(response, 400, "bad_parameter")["parameter"] == "cursor"
        # An ordinary far-but-valid instant is fine.
        ok = await client.get("/v1/sessions", params={"cursor": cursor("9999-12-31T00:00:00Z")})
        assert ok.status_code == 200


# ---- HTTP framing: raw bytes on a socket ----------------------------------------------


async def exchange(server: Server, raw: bytes, *, read_for: float = 5.0) -> bytes:
    """Send `raw` on a fresh connection and read until the server closes it (or
    `read_for` seconds pass): everything the server said."""
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    received = b""
    async with stream:
        await stream.send_all(raw)
        with trio.move_on_after(read_for):
            while chunk := await stream.receive_some(65536):
                received += chunk
            return received
    raise AssertionError(f"the connection was kept open after: {received[:500]!r}")


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:size]))
        data = rest[size:]
    return out


async def test_transfer_encoding_with_content_length_is_refused_and_the_connection_closed(
    server: Server, make_key: MakeKey
) -> None:
    token = await make_key("acme", "ingest")
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    raw = (
        b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(chunked)}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked
        + smuggled
    )
    answered = responses(await exchange(server, raw))
    assert len(answered) == 1, answered  # the second request is never served
    status, headers, body = answered[0]
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert b'"code":"bad_framing"' in body


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed_request"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (
            b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "not_implemented",
        ),
    ],
)
async def test_the_http_layers_own_errors_are_problem_json(
    server: Server, raw: bytes, status: int, code: str
) -> None:
    answered = responses(await exchange(server, raw))
    assert [a[0] for a in answered] == [status]
    _, headers, body = answered[0]
    assert headers["content-type"] == "application/problem+json"
    assert f'"code":"{code}"'.encode() in body


async def test_a_wrong_method_is_a_405_problem_with_allow(server: Server) -> None:
    async with server.client() as client:
        response = await client.get("/v1/ingest")
        assert_problem(response, 405, "method_not_allowed")
        assert "POST" in response.headers["allow"].split(", ")
        response = await client.delete("/v1/keys")
        assert_problem(response, 405, "method_not_allowed")
        assert "GET" in response.headers["allow"].split(", ")


async def test_a_body_that_never_arrives_is_a_408_problem(
    server: Server, make_key: MakeKey
) -> None:
    server.app.config["BODY_TIMEOUT"] = 0.5
    token = await make_key("acme", "ingest")
    raw = (
        b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    answered = responses(await exchange(server, raw, read_for=10))
    assert [a[0] for a in answered] == [408]
    _, headers, body = answered[0]
    assert headers["content-type"] == "application/problem+json"
    assert b'"code":"request_timeout"' in body


async def test_double_slashes_are_not_redirected(server: Server, make_key: MakeKey) -> None:
    async with server.client(await make_key("acme", "read")) as client:
        response = await client.get("/v1/sessions//x/records", headers={"Host": "evil.example"})
        assert_problem(response, 404, "not_found")
        assert "location" not in response.headers


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "ascii"])
async def test_a_charset_other_than_utf8_is_415(
    server: Server, make_key: MakeKey, charset: str
) -> None:
    async with server.client(await make_key("acme", "ingest")) as client:
        content_type = {"Content-Type": f"application/json; charset={charset}"}
        response = await client.post(
            "/v1/ingest", content=body_of(Chain().make(1)), headers=content_type
        )
        assert_problem(response, 415, "unsupported_media_type")
        ok = await client.post(
            "/v1/ingest",
            content=body_of(Chain().make(1)),
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )
        assert ok.status_code == 200


# ---- API keys: the same cost whether the key id exists or not ---------------------------


async def test_a_wrong_key_costs_the_same_whether_its_id_exists_or_not(
    server: Server, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = await make_key("acme", "ingest")
    prefix, api_key_id, _ = real.split("_", 2)
    wrong_secret = f"{prefix}_{api_key_id}_{'A' * 43}"
    unknown_id = f"{prefix}_{'0' * 16}_{'A' * 43}"
    lookups: list[str] = []
    find = tenants.find_api_key

    async def counted(db: Any, key_id: str) -> Any:
        lookups.append(key_id)
        return await find(db, key_id)

    monkeypatch.setattr(tenants, "find_api_key", counted)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(3):
            for token in (wrong_secret, unknown_id):
                response = await client.post(
                    "/v1/ingest",
                    content=body_of(Chain().make(1)),
                    headers={**JSON, "Authorization": f"Bearer {token}"},
                )
                assert_problem(response, 401, "unauthenticated")
    # Each id is looked up once, then both are answered from the cache alike.
    assert sorted(lookups) == sorted([api_key_id, "0" * 16])


# ---- bytes in flight ------------------------------------------------------------------


async def test_request_bytes_beyond_the_workers_bound_are_refused_unread(
    server: Server, make_key: MakeKey
) -> None:
    token = await make_key("acme", "ingest")
    budget = server.app.extensions["bodies"]
    budget.held = budget.limit - 1000  # as if other requests held the rest
    try:
        async with server.client(token) as client:
            response = await client.post(
                "/v1/ingest", content=body_of(Chain().make(20)), headers=JSON
            )
            assert_problem(response, 429, "overloaded")
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["connection"] == "close"
    finally:
        budget.held -= budget.limit - 1000
    async with server.client(token) as client:
        response = await client.post("/v1/ingest", content=body_of(Chain().make(20)), headers=JSON)
        assert response.status_code == 200
    assert budget.held == 0


# ---- logs -------------------------------------------------------------------------------


async def test_client_misbehaviour_logs_no_errors(
    server: Server, make_key: MakeKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = await make_key("acme", "ingest")
    caplog.set_level(logging.INFO)
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    # A client that goes away half-way through its body.
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    await stream.send_all(
        b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"events"'
    )
    await trio.sleep(0.2)
    await stream.aclose()
    # Bad framing of all kinds.
    for raw in (b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000):
        await exchange(server, raw)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).status_code == 200
    await trio.sleep(0.5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
