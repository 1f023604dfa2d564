"""Tenancy and API keys: isolation between tenants, scopes, revocation, the keys CLI."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import trio

from service.core import credentials
from service.storage import tenants
from service.storage.database import Database

from .chain import Chain, body_of
from .conftest import Server
from .support import (
    JSON,
    MakeKey,
    assert_problem,
    assert_verifies,
    assert_whole_batches,
    cli,
    stored,
)


def key_id_of(token: str) -> str:
    parsed = credentials.parse_token(token)
    assert parsed is not None
    return parsed[0]


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/ingest", content=body_of(events), headers=JSON)


def read_paths(session_id: str) -> list[str]:
    return [
        f"/v1/sessions/{session_id}",
        f"/v1/sessions/{session_id}/records",
        f"/v1/sessions/{session_id}/verify",
    ]


async def test_tenants_do_not_see_or_touch_each_others_sessions(
    db: Database, server: Server, make_key: MakeKey
) -> None:
    chain_b = Chain()
    async with (
        server.client(await make_key("tenant-a")) as a,
        server.client(await make_key("tenant-b")) as b,
    ):
        assert (await ingest(b, chain_b.make(12))).status_code == 200
        for path in read_paths(chain_b.session_id):
            assert (await b.get(path)).status_code == 200
            assert_problem(await a.get(path), 404, "not_found")
        listed = (await a.get("/v1/sessions")).json()["sessions"]
        assert listed == []

        # Tenant A's batch for the same session_id starts its own chain at seq 0,
        # and B's stored chain (head, events, seals) is untouched.
        b_before = (await b.get(f"/v1/sessions/{chain_b.session_id}")).json()
        chain_a = Chain(
            session_id=chain_b.session_id, payload=lambda seq: {"tenant": "a", "n": seq}
        )
        resp = await ingest(a, chain_a.make(5))
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 5 and resp.json()["head"]["seq"] == 4
        # B's chain continues from its own head, not A's.
        assert (await ingest(b, chain_b.make(3))).status_code == 200
        b_after = (await b.get(f"/v1/sessions/{chain_b.session_id}")).json()
        assert b_after["next_seq"] == 15 == b_before["next_seq"] + 3
        assert b_after["head_hash"] == chain_b.events[-1]["hash"]
        a_head = (await a.get(f"/v1/sessions/{chain_a.session_id}")).json()
        assert a_head["next_seq"] == 5 and a_head["head_hash"] == chain_a.events[-1]["hash"]

        # Each tenant replays only its own records.
        a_lines = (await a.get(f"/v1/sessions/{chain_a.session_id}/records")).content
        assert b"tenant" in a_lines and a_lines.count(b"\n") == 5 + 1
        b_lines = (await b.get(f"/v1/sessions/{chain_b.session_id}/records")).content
        assert b'"tenant"' not in b_lines and b_lines.count(b"\n") == 15 + 2
        await assert_verifies(a, chain_a.session_id)
        await assert_verifies(b, chain_b.session_id)

    tenant_ids = {
        row["name"]: row["id"]
        for row in await db.run(lambda conn: conn.fetch("SELECT id, name FROM tenants"))
    }
    a_stored = await stored(db, chain_a.session_id, tenant_ids["tenant-a"])
    b_stored = await stored(db, chain_b.session_id, tenant_ids["tenant-b"])
    assert_whole_batches(a_stored)
    assert_whole_batches(b_stored)
    assert a_stored.events == {e["seq"]: e["hash"] for e in chain_a.events}
    assert b_stored.events == {e["seq"]: e["hash"] for e in chain_b.events}


async def test_scopes_and_revocation(db: Database, server: Server, make_key: MakeKey) -> None:
    chain = Chain()
    both = await make_key("acme", "ingest", "read")
    read_only = await make_key("acme", "read")
    ingest_only = await make_key("acme", "ingest")
    async with server.client(both) as full:
        assert (await ingest(full, chain.make(4))).status_code == 200

    async with server.client(read_only) as client:
        assert_problem(await ingest(client, chain.make(2)), 403, "forbidden")
        for path in read_paths(chain.session_id):
            assert (await client.get(path)).status_code == 200
    async with server.client(ingest_only) as client:
        resp = await ingest(client, chain.events[4:6])
        assert resp.status_code == 200, resp.text
        for path in [*read_paths(chain.session_id), "/v1/sessions"]:
            assert_problem(await client.get(path), 403, "forbidden")

    # Revoked: 401 everywhere, the same answer as an unknown key.
    assert await tenants.revoke_api_key(db, key_id_of(both))
    assert not await tenants.revoke_api_key(db, key_id_of(both))
    async with server.client(both) as client:
        body = assert_problem(await ingest(client, chain.make(1)), 401, "unauthenticated")
        assert "revoked" in body["detail"]
        for path in read_paths(chain.session_id):
            resp = await client.get(path)
            assert_problem(resp, 401, "unauthenticated")
            assert resp.headers["www-authenticate"] == "Bearer"

    after = await stored(db, chain.session_id)
    assert_whole_batches(after)
    assert after.event_count == 6


async def test_missing_or_garbage_credentials(server: Server, make_key: MakeKey) -> None:
    good = await make_key()
    wrong_secret = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown = credentials.new_api_key().token
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {good}x"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": f"Bearer {unknown}"},
    ]
    events = Chain().make(1)
    async with server.client() as client:
        for h in headers:
            resp = await client.post("/v1/ingest", content=body_of(events), headers={**JSON, **h})
            assert_problem(resp, 401, "unauthenticated")
            assert resp.headers["www-authenticate"] == "Bearer"
            resp = await client.get(f"/v1/sessions/{events[0]['session_id']}", headers=h)
            assert_problem(resp, 401, "unauthenticated")
        # Auditors need no key for the public halves of the seal keys.
        resp = await client.get("/v1/keys")
        assert resp.status_code == 200
        keys = resp.json()["keys"]
        assert [k["key_id"] for k in keys] == [server.runtime.signer.key_id]
        assert keys[0]["public_key"] == server.runtime.signer.public_key.hex()
        assert keys[0]["alg"] == "Ed25519" and keys[0]["active"] is True


async def test_keys_cli(db: Database, server: Server, database_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(database_url, *args)

    created = await trio.to_thread.run_sync(
        run, "keys", "create", "--tenant", "cli-tenant", "--scope", "ingest"
    )
    assert created.returncode == 0, created.stderr
    # Only the key, alone on one line of stdout: scripts capture it as is.
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and created.stdout == lines[0] + "\n"
    token = lines[0]
    key_id = key_id_of(token)

    listed = await trio.to_thread.run_sync(run, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    mine = [r for r in rows if r[0] == key_id]
    assert len(mine) == 1
    assert mine[0][1:3] == ["cli-tenant", "ingest"] and mine[0][-1] == "active"
    assert token.split("_")[-1] not in listed.stdout  # never the secret

    chain = Chain()
    async with server.client(token) as client:
        resp = await ingest(client, chain.make(3))
        assert resp.status_code == 200, resp.text
        assert_problem(await client.get(f"/v1/sessions/{chain.session_id}"), 403, "forbidden")

        revoked = await trio.to_thread.run_sync(run, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout == ""
        again = await trio.to_thread.run_sync(run, "keys", "revoke", key_id)
        assert again.returncode != 0
        listed = await trio.to_thread.run_sync(run, "keys", "list", "--tenant", "cli-tenant")
        assert listed.stdout.count("\n") == 1 and "\trevoked " in listed.stdout

        assert_problem(await ingest(client, chain.make(1)), 401, "unauthenticated")
    assert (await stored(db, chain.session_id)).event_count == 3
