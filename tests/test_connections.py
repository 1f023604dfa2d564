"""Keep-alive connections survive answers sent before the request body was read.

An ingest refused early (401, 403, 415, 413, or 503 while the database is down)
is answered before its body is consumed. A client then reuses the connection: its
next request must be answered, not left hanging (regression: quart-trio cancelled
hypercorn half-way through closing the stream, and the connection hung for good).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from service.storage.database import Database

from .chain import Chain, body_of
from .conftest import spawn_serve
from .support import JSON, MakeKey, assert_problem

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
