"""Helpers shared by the tests: the types and headers they pass around, problem
bodies, and what is really stored for a session, read straight from PostgreSQL and
through the API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import httpx
import trio

import hashcore
from service.core.commit import ChainHead, Submission, append_batch
from service.core.group_commit import GroupCommit
from service.core.outcomes import Outcome
from service.runtime import utc_now
from service.storage import seal_keys, tenants
from service.storage.database import Connection, Database
from service.storage.locks import SESSION_HEAD

from .chain import ZERO, body_of

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the working directory of `python -m service` in the tests."""

MakeKey: TypeAlias = Callable[..., Awaitable[str]]
"""The `make_key` fixture: `await make_key("tenant", "ingest", "read")` -> a new API key."""

JSON = {"Content-Type": "application/json"}
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class DirectCommitter:
    """Commits batches through `core.commit.append_batch`, without HTTP or actors."""

    db: Database
    tenant_id: int
    api_key_id: str
    signer: hashcore.Signer

    def submission(self, events: list[dict[str, Any]]) -> Submission:
        batch = hashcore.verify_batch(body_of(events), 1000)
        return Submission(self.tenant_id, self.api_key_id, batch)

    async def append(
        self,
        events: list[dict[str, Any]],
        known: ChainHead | None = None,
        group: GroupCommit | None = None,
    ) -> tuple[Outcome, ChainHead | None]:
        sub = self.submission(events)
        return await append_batch(self.db, sub, self.signer, utc_now, known, group)


async def direct_committer(db: Database, make_key: MakeKey) -> DirectCommitter:
    """A new ingest key of tenant 'acme', and an active seal key."""
    api_key_id = (await make_key("acme", "ingest")).split("_")[1]
    row = await tenants.find_api_key(db, api_key_id)
    assert row is not None
    signer = hashcore.Signer(bytes(range(32)))
    await seal_keys.register(db, signer.key_id, signer.public_key, activate=True)
    return DirectCommitter(db, row.tenant_id, api_key_id, signer)


_SESSION_LOCKS = """SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted)
                    FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2"""


async def session_locks(db: Database) -> tuple[int, int]:
    """(held, awaited) session-head advisory locks, in the whole database."""
    row = await db.run(lambda conn: conn.fetchrow(_SESSION_LOCKS, SESSION_HEAD))
    assert row is not None
    return int(row[0]), int(row[1])


async def until_session_locks(db: Database, held: int, awaited: int) -> None:
    """Wait until `held` session-head advisory locks are held and `awaited` awaited."""
    while await session_locks(db) != (held, awaited):
        await trio.sleep(0.01)


@asynccontextmanager
async def holding_session_lock(
    db: Database, tenant_id: int, session_id: str
) -> AsyncIterator[None]:
    """Hold `session_id`'s advisory lock, the one the commit functions take
    (migration 0002), in a transaction of its own for the block: commits to that
    session wait behind it, and are released together when the block ends."""
    release = asyncio.Event()

    async def hold(conn: Connection) -> None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2::bigint::text || '/' || $3::text))",
            SESSION_HEAD,
            tenant_id,
            session_id,
        )
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.transaction, hold)
        await until_session_locks(db, 1, 0)
        try:
            yield
        finally:
            release.set()


def assert_problem(resp: httpx.Response, status: int, *codes: str) -> dict[str, Any]:
    """`resp` is an RFC 9457 problem with this status and one of `codes`; its body."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["code"] in codes, body
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str) and body[member], body
    return body


def assert_unavailable(resp: httpx.Response) -> dict[str, Any]:
    body = assert_problem(resp, 503, "unavailable")
    assert int(resp.headers["retry-after"]) >= 1
    return body


@dataclass(frozen=True)
class Stored:
    """A session as the database holds it."""

    head: dict[str, Any] | None  # the `sessions` row, or None
    events: dict[int, str]  # seq -> hash of the stored event
    seals: list[dict[str, Any]]  # the stored seal records, by seq

    @property
    def event_count(self) -> int:
        return len(self.events)


async def stored(db: Database, session_id: str, tenant_id: int | None = None) -> Stored:
    async def work(conn: Connection) -> Stored:
        tenant = "($2::bigint IS NULL OR tenant_id = $2)"
        head = await conn.fetchrow(
            f"SELECT * FROM sessions WHERE session_id = $1 AND {tenant}", session_id, tenant_id
        )
        rows = await conn.fetch(
            f"""SELECT seq, is_seal, hash, record FROM records
                WHERE session_id = $1 AND {tenant} ORDER BY seq, is_seal""",
            session_id,
            tenant_id,
        )
        events: dict[int, str] = {}
        seals = []
        for row in rows:
            if row["is_seal"]:
                seals.append(json.loads(bytes(row["record"])))
            else:
                assert row["seq"] not in events, f"seq {row['seq']} stored twice"
                events[row["seq"]] = row["hash"]
        return Stored(None if head is None else dict(head), events, seals)

    return await db.run(work)


def assert_whole_batches(s: Stored) -> None:
    """Events are 0..n-1 without gap, and the seals tile them exactly: every
    batch is there with its seal, or not at all; the head agrees."""
    n = s.event_count
    assert sorted(s.events) == list(range(n))
    covered = 0
    prev_seal = ZERO
    for seal in s.seals:
        assert seal["kind"] == "CHAIN_SEAL"
        assert seal["payload"]["first_seq"] == covered, (seal, covered)
        assert seal["payload"]["prev_seal"] == prev_seal
        assert seal["prev_hash"] == s.events[seal["seq"]]
        covered = seal["seq"] + 1
        prev_seal = seal["hash"]
    assert covered == n
    if n == 0:
        assert s.head is None
        return
    assert s.head is not None
    assert s.head["next_seq"] == n
    assert s.head["head_hash"] == s.events[n - 1]
    assert s.head["seal_count"] == len(s.seals)
    assert s.head["last_seal_hash"] == prev_seal


async def public_keys(client: httpx.AsyncClient) -> dict[str, bytes]:
    resp = await client.get("/v1/keys")
    assert resp.status_code == 200, resp.text
    return {k["key_id"]: bytes.fromhex(k["public_key"]) for k in resp.json()["keys"]}


async def assert_verifies(client: httpx.AsyncClient, session_id: str) -> hashcore.ChainReport:
    """The server's own verification, and an auditor's over the replay: both ok."""
    resp = await client.get(f"/v1/sessions/{session_id}/verify")
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is True, resp.json()
    replay = await client.get(f"/v1/sessions/{session_id}/records")
    assert replay.status_code == 200, replay.text
    records = replay.content.splitlines()
    report = hashcore.verify_chain(records, await public_keys(client))
    assert report.ok, report.problem and report.problem.detail
    assert report.records == len(records)
    return report


def python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python <args>` in a process of its own, from the checkout's root; its
    output captured, a minute at most."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m service <args>` against `database_url`, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **(env or {})}
    return python("-m", "service", *args, env=env)
