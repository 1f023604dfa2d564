"""Baseline 1 of bench/ingest_bench.py: the service's commit transactions, straight
from plain asyncio + asyncpg, with rows built before timing. The database's ceiling.

Run by ingest_bench.py in its own process (never imported there: the parent must
stay free of asyncio policy changes, and this one free of trio_asyncio):

    python bench/direct_asyncpg.py '<json config>'

Reads the pickled request bodies (list per session), turns them into rows and
seals, then runs `writers` connections, each owning sessions w, w+writers, ...
and committing their batches round-robin, each session's in order: one batch
per statement, or with `group` > 1, `group` of its sessions' batches per
statement (the service's group commit, `append_packed_group`). Prints
"start" when timing begins and "end" when it ends (then waits for a line on
stdin, so the parent can read the database's CPU time before our connections
close), then one JSON line with the results.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from reference import ZERO

import hashcore
from service.storage.locks import SESSION_HEAD
from service.storage.queries import (
    APPEND_AT_HEAD,
    APPEND_GROUP,
    AppendArgs,
    group_args,
    pack_rows,
)

SEAL_TS = "2026-11-27T12:00:00.000000Z"


@dataclass
class Commit:
    """One batch, as the arguments of the service's statements."""

    session_id: str
    first_seq: int
    first_prev_hash: str
    events: int
    append_args: AppendArgs


def build(bodies_by_session: list[list[bytes]], tenant_id: int, key_id: str) -> list[list[Commit]]:
    """What `append_batch` computes before its write, for every batch (untimed)."""
    signer = hashcore.Signer(os.urandom(32))
    plan = []
    for bodies in bodies_by_session:
        prev_seal = ZERO
        commits = []
        for body in bodies:
            b = hashcore.verify_batch(body, 1000)
            seal = signer.seal(
                b.session_id, b.last_seq, b.first_seq, prev_seal, b.last_hash, SEAL_TS
            )
            n = b.count
            rows = pack_rows(
                b.first_seq, b.kinds, b.ts, b.hashes, b.records, (seal.ts, seal.hash, seal.record)
            )
            args = AppendArgs(
                SESSION_HEAD,
                tenant_id,
                b.session_id,
                key_id,
                (b.first_seq, b.first_prev_hash, prev_seal),
                rows,
                b.last_hash,
                b.ts[0] if b.first_seq == 0 else None,
                b.ts[-1],
            )
            prev_seal = seal.hash
            commits.append(Commit(b.session_id, b.first_seq, b.first_prev_hash, n, args))
        plan.append(commits)
    return plan


async def commit(conn: asyncpg.Connection, group: list[Commit]) -> None:
    """The fast path of service/core/commit.py `append_batch`: one statement, for
    one batch or a group (core/group_commit.py)."""
    if len(group) == 1:
        statuses = [await conn.fetchval(APPEND_AT_HEAD, *group[0].append_args.values())]
    else:
        statuses = await conn.fetchval(APPEND_GROUP, *group_args([c.append_args for c in group]))
    for c, status in zip(group, statuses, strict=True):
        if status != "appended":
            raise RuntimeError(f"session {c.session_id} at seq {c.first_seq}: {status}")


async def run(cfg: dict[str, Any], plan: list[list[Commit]]) -> dict[str, Any]:
    writers: int = cfg["writers"]
    group_size: int = cfg.get("group", 1)
    warm: int = cfg["warm_batches"]
    conns = [await asyncpg.connect(cfg["dsn"]) for _ in range(writers)]

    warmed = 0
    all_warm = asyncio.Event()
    window: dict[str, float] = {}
    latencies: list[float] = []
    done = {"events": 0, "batches": 0, "timed_events": 0, "timed_batches": 0}

    async def writer(w: int) -> None:
        nonlocal warmed
        conn = conns[w]
        mine = plan[w::writers]
        rounds = max(len(s) for s in mine)
        for k in range(rounds):
            if k == warm:
                warmed += 1
                if warmed == writers:
                    sys.stdout.write("start\n")
                    sys.stdout.flush()
                    window["t0"] = time.perf_counter()
                    all_warm.set()
                await all_warm.wait()
            due = [commits[k] for commits in mine if k < len(commits)]
            for g in range(0, len(due), group_size):
                if k >= warm and time.perf_counter() - window["t0"] >= cfg["duration"]:
                    return
                group = due[g : g + group_size]
                t = time.perf_counter()
                await commit(conn, group)
                events = sum(c.events for c in group)
                done["events"] += events
                done["batches"] += len(group)
                if k >= warm:
                    latencies.extend([time.perf_counter() - t] * len(group))
                    done["timed_events"] += events
                    done["timed_batches"] += len(group)
                    window["t1"] = time.perf_counter()

    # Bounded, so that a stuck database cannot keep this process (and the bench) alive.
    async with asyncio.timeout(cfg["duration"] + 180):
        await asyncio.gather(*(writer(w) for w in range(writers)))
    # The parent samples the database's CPU now, before our backends exit.
    sys.stdout.write("end\n")
    sys.stdout.flush()
    sys.stdin.readline()
    for conn in conns:
        await conn.close()
    return {
        **done,
        "seconds": window["t1"] - window["t0"],
        "latencies": latencies,
    }


def main() -> None:
    if sys.argv[1:] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        return
    if len(sys.argv) != 2:
        sys.exit(f"usage: python bench/direct_asyncpg.py '<json config>'\n\n{__doc__}")
    cfg = json.loads(sys.argv[1])
    with open(cfg["bodies"], "rb") as f:
        bodies_by_session: list[list[bytes]] = pickle.load(f)
    plan = build(bodies_by_session, cfg["tenant_id"], cfg["key_id"])
    del bodies_by_session
    result = asyncio.run(run(cfg, plan))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
