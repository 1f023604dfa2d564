"""Seal-key rotation, metrics across workers, structured logs."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import trio

from service.config import Settings
from service.storage.database import Database

from .chain import Chain, body_of
from .conftest import spawn_serve, start_server
from .support import JSON, MakeKey, assert_verifies, cli


async def test_rotated_seal_key_keeps_old_seals_verifiable(
    db: Database, settings: Settings, database_url: str, make_key: MakeKey
) -> None:
    key = await make_key()
    chain = Chain()
    key_file = settings.key_file()

    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, settings)
        old_key_id = server.runtime.signer.key_id
        async with server.client(key) as client:
            first = await client.post("/v1/ingest", content=body_of(chain.make(3)), headers=JSON)
            assert first.status_code == 200
        nursery.cancel_scope.cancel()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    rotated = await trio.to_thread.run_sync(
        lambda: cli(database_url, "keys", "rotate-seal", env={"SEAL_KEY_FILE": str(key_file)})
    )
    assert rotated.returncode == 0, rotated.stderr
    new_key_id = rotated.stdout.strip()
    assert new_key_id != old_key_id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (key_file.parent / f"seal_key.{old_key_id}.retired.pem").exists()

    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, settings)
        assert server.runtime.signer.key_id == new_key_id
        async with server.client(key) as client:
            second = await client.post("/v1/ingest", content=body_of(chain.make(3)), headers=JSON)
            assert second.status_code == 200
            assert second.json()["seal"]["payload"]["key_id"] == new_key_id
            assert first.json()["seal"]["payload"]["key_id"] == old_key_id
            keys = {k["key_id"]: k["active"] for k in (await client.get("/v1/keys")).json()["keys"]}
            assert keys == {old_key_id: False, new_key_id: True}
            report = await assert_verifies(client, chain.session_id)
            assert sorted(report.keys_used) == sorted([old_key_id, new_key_id])
        nursery.cancel_scope.cancel()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ingest_pids(log: Path, skip_lines: int = 0) -> set[int]:
    """Processes that logged an ingest so far (after the first `skip_lines` lines)."""
    pids = set()
    for line in log.read_text().splitlines()[skip_lines:]:
        entry = json.loads(line)
        if entry["logger"] == "service.access" and entry["path"] == "/v1/ingest":
            pids.add(entry["pid"])
    return pids


def test_serve_refuses_more_group_writers_than_the_pool_can_spare(
    database_url: str, tmp_path: Path
) -> None:
    """Each group-commit writer keeps a connection: with the long reads' half of
    the pool taken too, the slow-path commits and key lookups would wait for a
    replay to end (or, with as many writers as connections, forever)."""
    with pytest.raises(RuntimeError) as refused:
        spawn_serve(database_url, tmp_path / "data", env={"CHAIN_GROUP_WRITERS": "4"})
    assert "serve exited with 1" in str(refused.value)
    assert "CHAIN_GROUP_WRITERS (4) is too many for CHAIN_POOL_SIZE (8)" in str(refused.value)
    assert "at most 3 writers" in str(refused.value)


@pytest.mark.slow
async def test_metrics_add_up_across_workers_and_logs_are_json(
    db: Database, database_url: str, make_key: MakeKey, tmp_path: Path
) -> None:
    key = await make_key()
    headers = {"Authorization": f"Bearer {key}"}
    serve = await trio.to_thread.run_sync(
        lambda: spawn_serve(database_url, tmp_path / "data", workers=2)
    )
    try:
        batches = 0
        # A new connection each time, until both workers have served some.
        while batches < 6 or len(ingest_pids(serve.log)) < 2:
            assert batches < 200, "the kernel never handed a connection to the second worker"
            async with httpx.AsyncClient(base_url=serve.url, headers=headers) as client:
                r = await client.post("/v1/ingest", content=body_of(Chain().make(5)), headers=JSON)
                assert r.status_code == 200, r.text
                batches += 1
        async with httpx.AsyncClient(base_url=serve.url, headers=headers) as client:
            bad = await client.post("/v1/ingest", content=b"{", headers=JSON)
            assert bad.status_code == 400
            text = (await client.get("/metrics")).text
        assert metric(text, "chain_events_accepted_total") == batches * 5
        assert metric(text, 'chain_batches_total{result="appended"}') == batches
        assert metric(text, "chain_batch_seconds_count") == batches
        assert 'code="malformed_json"' in text
        # Sessions held and actors at work, summed over the workers.
        assert "\nchain_working_session_actors " in text
        assert metric(text, "chain_live_session_actors") >= metric(
            text, "chain_working_session_actors"
        )
        # Each worker that wrote keeps a connection per writer used (2 writers
        # each); a worker's gauges are sampled every 2 s, so wait for both.
        with trio.fail_after(10):
            while metric(text, "chain_db_pool_kept") < 2:
                await trio.sleep(0.2)
                async with httpx.AsyncClient(base_url=serve.url) as client:
                    text = (await client.get("/metrics")).text
        assert metric(text, "chain_db_pool_kept") <= 4
    finally:
        await trio.to_thread.run_sync(serve.stop)

    access = 0
    for line in serve.log.read_text().splitlines():
        entry = json.loads(line)  # every line the server wrote is one JSON object
        assert {"ts", "level", "logger", "msg", "pid"} <= set(entry)
        if entry["logger"] == "service.access" and entry["path"] == "/v1/ingest":
            access += 1
            assert entry["request_id"]
            assert entry["status"] in (200, 400)
    assert access == batches + 1


@pytest.mark.slow
async def test_a_seal_key_rotation_reaches_every_running_worker(
    db: Database, database_url: str, make_key: MakeKey, tmp_path: Path
) -> None:
    key = await make_key()
    headers = {"Authorization": f"Bearer {key}"}
    data = tmp_path / "data"
    key_file = data / "seal_key.pem"
    serve = await trio.to_thread.run_sync(
        lambda: spawn_serve(
            database_url, data, workers=2, env={"CHAIN_SEAL_KEY_POLL_SECONDS": "0.5"}
        )
    )

    async def seal_key_of_a_fresh_connection() -> str:
        async with httpx.AsyncClient(base_url=serve.url, headers=headers) as client:
            r = await client.post("/v1/ingest", content=body_of(Chain().make(2)), headers=JSON)
            assert r.status_code == 200, r.text
            key_id: str = r.json()["seal"]["payload"]["key_id"]
            return key_id

    try:
        old_key_id = await seal_key_of_a_fresh_connection()
        rotated = await trio.to_thread.run_sync(
            lambda: cli(database_url, "keys", "rotate-seal", env={"SEAL_KEY_FILE": str(key_file)})
        )
        assert rotated.returncode == 0, rotated.stderr
        new_key_id = rotated.stdout.strip()
        assert new_key_id != old_key_id
        # No restart: within a few poll periods, every worker signs with the new key.
        with trio.fail_after(30):
            while await seal_key_of_a_fresh_connection() != new_key_id:
                await trio.sleep(0.1)
        await trio.sleep(1.5)  # past a poll period of each worker
        mark = len(serve.log.read_text().splitlines())
        seen: list[str] = []
        while len(seen) < 8 or len(ingest_pids(serve.log, mark)) < 2:
            assert len(seen) < 200, "the kernel never handed a connection to the second worker"
            seen.append(await seal_key_of_a_fresh_connection())
        assert set(seen) == {new_key_id}
    finally:
        await trio.to_thread.run_sync(serve.stop)


@pytest.mark.slow
async def test_a_killed_worker_is_replaced_and_the_server_keeps_serving(
    db: Database, database_url: str, make_key: MakeKey, tmp_path: Path
) -> None:
    """hypercorn's own loop took the whole server down (exit status 0) when one
    worker died: found by the fault soak."""
    key = await make_key()
    serve = await trio.to_thread.run_sync(
        lambda: spawn_serve(database_url, tmp_path / "data", workers=2)
    )
    try:
        master = psutil.Process(serve.proc.pid)

        def workers() -> set[int]:
            """The live worker processes (not multiprocessing's resource tracker)."""
            found = set()
            for child in master.children():
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        found.add(child.pid)
                except psutil.Error:  # gone, or a zombie not reaped yet
                    continue
            return found

        assert len(workers()) == 2
        victim = min(workers())
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(60):
            while True:
                alive = workers()
                if len(alive) == 2 and victim not in alive:
                    break
                assert serve.proc.poll() is None, "the server exited when one worker died"
                await trio.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(8):  # fresh connections: both workers answer
            async with httpx.AsyncClient(base_url=serve.url, headers=headers) as client:
                with trio.fail_after(30):
                    while (await client.get("/readyz")).status_code != 200:
                        await trio.sleep(0.1)
                r = await client.post("/v1/ingest", content=body_of(Chain().make(2)), headers=JSON)
                assert r.status_code == 200, r.text
    finally:
        await trio.to_thread.run_sync(serve.stop)
    assert serve.proc.returncode == 0
