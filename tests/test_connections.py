"""Kept-alive connections: they survive answers sent before the request body was
read, and their keep-alive timer keeps hypercorn's behaviour.

An ingest refused early (401, 403, 415, 413, or 503 while the database is down)
is answered before its body is consumed. A client then reuses the connection: its
next request must be answered, not left hanging (regression: quart-trio cancelled
hypercorn half-way through closing the stream, and the connection hung for good).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from hypercorn.events import Event, RawData
from hypercorn.trio.tcp_server import TCPServer

from service.config import Settings
from service.storage.database import Database

from .chain import Chain, body_of
from .conftest import Server, spawn_serve, start_server
from .support import JSON, MakeKey, assert_problem, stored

MAX_BODY = 20_000


@pytest.mark.slow
async def test_early_answers_leave_the_connection_usable(
    db: Database, make_key: MakeKey, database_url: str, tmp_path: Path
) -> None:
    ingest_key = await make_key("acme", "ingest")
    read_key = await make_key("acme", "read")
    serve = await trio.to_thread.run_sync(
        lambda: spawn_serve(
            database_url, tmp_path / "serve", env={"CHAIN_MAX_BODY_BYTES": str(MAX_BODY)}
        )
    )
    small = body_of(Chain().make(8))
    large = body_of(Chain().make(200))
    assert len(small) < MAX_BODY < len(large)
    early: list[tuple[dict[str, str], bytes, int, str]] = [
        ({}, small, 401, "unauthenticated"),
        ({"Authorization": f"Bearer {read_key}"}, small, 403, "forbidden"),
        ({"Authorization": f"Bearer {ingest_key}", "Content-Type": "text/plain"}, small, 415,
         "unsupported_media_type"),
        ({"Authorization": f"Bearer {ingest_key}"}, large, 413, "too_large"),
    ]  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
            for _ in range(40):
                for headers, body, status, code in early:
                    with trio.fail_after(20):
                        resp = await client.post("/v1/ingest", content=body, headers=JSON | headers)
                        assert_problem(resp, status, code)
                        # Read to the end and kept open, unless the body was too large.
                        closes = resp.headers.get("connection") == "close"
                        assert closes == (status == 413), resp.headers
                        assert (await client.get("/healthz")).status_code == 200
    finally:
        await trio.to_thread.run_sync(serve.stop)


# ---- the keep-alive timer (service/api/connection.py) -------------------------------


class _Http:
    """One raw HTTP/1.1 connection: requests written by hand, answers read in full."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    @asynccontextmanager
    async def connect(cls, server: Server) -> AsyncIterator[_Http]:
        url = httpx.URL(server.url)
        assert url.port is not None
        async with await trio.open_tcp_stream(url.host, url.port) as stream:
            yield cls(stream)

    async def _more(self) -> None:
        data = await self.stream.receive_some()
        assert data, "the server closed the connection"
        self._buffer += data

    async def answer(self, *, body: bool = True) -> tuple[int, dict[str, str]]:
        """The status and headers of the next answer (its body, if it has one, read
        and dropped)."""
        while b"\r\n\r\n" not in self._buffer:
            await self._more()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        length = int(headers["content-length"]) if body else 0
        while len(self._buffer) < length:
            await self._more()
        self._buffer = self._buffer[length:]
        return int(status_line.split()[1]), headers

    async def get(self, path: str) -> int:
        await self.stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return (await self.answer())[0]

    async def closed_by_server(self) -> bool:
        with trio.fail_after(20):
            while True:
                data = await self.stream.receive_some()
                if not data:
                    return True
                self._buffer += data


def _ingest_head(key: str, body: bytes) -> bytes:
    return (
        "POST /v1/ingest HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()


def _connection_tasks() -> int:
    """The server's connection tasks (one per accepted connection, while it lasts)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, tasks = 0, [root]
    while tasks:
        task = tasks.pop()
        count += task.name.endswith("._run_handler")
        tasks.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def test_a_kept_alive_connection_times_out_counted_from_its_last_answer(
    db: Database, settings: Settings, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, settings, keep_alive_timeout=1.5)
    async with _Http.connect(server) as http:
        for _ in range(5):
            assert await http.get("/healthz") == 200
            await trio.sleep(0.5)  # 2.5 s in all, never 1.5 s idle: each answer restarts it
        assert await http.closed_by_server()  # left idle, it is closed


async def test_a_request_slower_than_the_keep_alive_timeout_is_answered(
    db: Database, settings: Settings, nursery: trio.Nursery, make_key: MakeKey
) -> None:
    server = await start_server(nursery, settings, keep_alive_timeout=0.5)
    key = await make_key("acme", "ingest")
    body = body_of(Chain().make(3))
    async with _Http.connect(server) as http:
        await http.stream.send_all(_ingest_head(key, body))
        for piece in (body[:10], body[10:20], body[20:30]):
            await http.stream.send_all(piece)
            await trio.sleep(0.4)  # 1.2 s in all while its request is served: not idle
        await http.stream.send_all(body[30:])
        status, _ = await http.answer()
        assert status == 200
        assert await http.get("/healthz") == 200  # the connection is still kept,
        assert await http.closed_by_server()  # and still timed out once idle


async def test_shutdown_closes_idle_connections_and_answers_the_request_in_flight(
    db: Database, settings: Settings, make_key: MakeKey
) -> None:
    key = await make_key("acme", "ingest")
    chain = Chain()
    body = body_of(chain.make(3))
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, settings, keep_alive_timeout=60, stop=stop)
            async with _Http.connect(server) as idle, _Http.connect(server) as busy:
                assert await idle.get("/healthz") == 200
                await busy.stream.send_all(_ingest_head(key, body) + body[:10])
                await trio.testing.wait_all_tasks_blocked(0.1)  # its request is being served
                stop.set()
                assert await idle.closed_by_server()
                await busy.stream.send_all(body[10:])
                status, _ = await busy.answer()
                assert status == 200
                assert await busy.closed_by_server()
        # here the server has stopped: the nursery waited for it
    assert (await stored(db, chain.session_id)).event_count == 3


async def test_a_connection_whose_client_left_leaves_no_task_behind(
    db: Database, settings: Settings, nursery: trio.Nursery, make_key: MakeKey
) -> None:
    server = await start_server(nursery, settings, keep_alive_timeout=600)
    key = await make_key("acme", "ingest")
    body = body_of(Chain().make(3))
    async with _Http.connect(server) as idle, _Http.connect(server) as busy:
        assert await idle.get("/healthz") == 200
        await busy.stream.send_all(_ingest_head(key, body) + body[:10])
        await trio.testing.wait_all_tasks_blocked(0.1)
        assert _connection_tasks() == 2
    # Both gone: one idle (hypercorn's own timer held it for keep_alive_timeout), one
    # in the middle of its request.
    with trio.fail_after(20):
        while _connection_tasks():
            await trio.sleep(0.02)


# ---- an answer's writes (service/api/connection.py) ---------------------------------


async def test_an_answer_is_one_write_and_a_head_only_answer_too(
    db: Database, settings: Settings, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(nursery, settings)
    writes: list[bytes] = []  # what hypercorn's TCPServer is given to write
    protocol_send = TCPServer.protocol_send

    async def recorded(self: TCPServer, event: Event) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)
        await protocol_send(self, event)

    monkeypatch.setattr(TCPServer, "protocol_send", recorded)
    async with _Http.connect(server) as http:
        assert await http.get("/healthz") == 200
        await trio.testing.wait_all_tasks_blocked(0.05)  # the answer is over
        assert len(writes) == 1, writes  # head and body together, and no empty end
        assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b'{"status":"ok"}\n')
        writes.clear()
        # No body at all: the head goes out with the answer's end.
        await http.stream.send_all(b"HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers = await http.answer(body=False)
        assert status == 200 and int(headers["content-length"]) > 0
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n"), writes
        # The connection is still in step: the next answer is the next request's.
        assert await http.get("/healthz") == 200


async def test_pipelined_requests_are_answered_in_order(
    db: Database, settings: Settings, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, settings)
    async with _Http.connect(server) as http:
        await http.stream.send_all(
            b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        assert [(await http.answer())[0] for _ in range(3)] == [200, 404, 200]


# ---- an ingest request's tasks (service/api/ingest.py) ------------------------------


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_an_ingest_request_is_served_by_its_own_task_alone(
    db: Database, settings: Settings, nursery: trio.Nursery, make_key: MakeKey
) -> None:
    # Each task switch costs a worker a pass of its loop: the body is read by the
    # request's task, not by a task beside it (it used to be).
    settings = replace(settings, actor_linger_seconds=60)  # the session's actor stays
    server = await start_server(nursery, settings)
    key = await make_key("acme", "ingest")
    chain = Chain()
    spawned = _Spawned()
    async with _Http.connect(server) as http:
        for n in range(3):
            if n == 2:
                trio.lowlevel.add_instrument(spawned)
            body = body_of(chain.make(5))
            await http.stream.send_all(_ingest_head(key, body) + body)
            assert (await http.answer())[0] == 200
        await trio.testing.wait_all_tasks_blocked(0.05)
        trio.lowlevel.remove_instrument(spawned)
    assert spawned.names == ["hypercorn.trio.task_group._handle"]
    assert (await stored(db, chain.session_id)).event_count == 15


async def test_a_batch_whose_client_left_after_sending_it_is_stored(
    db: Database, settings: Settings, nursery: trio.Nursery, make_key: MakeKey
) -> None:
    # Nobody hears the answer, but the batch was whole: it is committed as if the
    # client had stayed (its retry would be answered duplicate).
    server = await start_server(nursery, settings)
    key = await make_key("acme", "ingest")
    chain = Chain()
    body = body_of(chain.make(4))
    async with _Http.connect(server) as http:
        await http.stream.send_all(_ingest_head(key, body) + body)
    with trio.fail_after(20):
        while (await stored(db, chain.session_id)).event_count != 4:
            await trio.sleep(0.02)
