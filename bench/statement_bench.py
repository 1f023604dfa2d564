"""What PostgreSQL spends on a batch's commit, and what a storage change would save.

Run on purpose (not a test):

    python bench/statement_bench.py           # 64 sessions x 30 batches per variant, ~1 min
    python bench/statement_bench.py --quick   # x 8, indicative only

PostgreSQL's CPU is about half of the machine's at the ingest bench's load (see
README, Ingest), and a group's statement runs its batches one after another in
one backend, so its CPU per batch also sets how long a batch waits for its
group (docs/performance.md, "What sets the tail"). This prices the service's
commit statement against the alternatives a change of the storage layer would
use, on one connection to a fresh embedded PostgreSQL (fsync on,
`synchronous_commit` on), each batch its own transaction, the ingest bench's
batches (100 events, ~300-B payloads):

- the service's statement, one batch per call (`append_packed_at_head`: the
  session's lock, the key and head checks, 100 events, the seal, the head's
  update): the baseline, 1.00x;
- the same batches, 8 sessions' per statement (`append_packed_group`, as the
  group commit writes them under load);
- the 100 events alone, no lock, no checks, no seal, no head, as
  `INSERT ... SELECT FROM unnest(...)` (the statement's way) and as `COPY`
  (one WAL record per page instead of one per row), with all 8 columns of
  `records` and with 5 (without `kind`, `ts` and `hash`, which repeat bytes
  of the record: the "schema diet").

Per batch it prints PostgreSQL's CPU (the backend's, from /proc), this
process's CPU (what the service's worker would spend encoding the arguments:
`COPY` rows are encoded field by field in Python) and the WAL written. Each
variant runs twice, the second pass in the reverse order, each time on emptied
tables after a checkpoint. Figures also go to bench/results/statements.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from statistics import fmean

import asyncpg
import results
from direct_asyncpg import Commit, build
from processes import ROOT, process_cpu
from systems import bench_database
from workload import EVENTS, build_bodies

from service.storage.queries import APPEND_AT_HEAD, APPEND_GROUP, group_args

SESSIONS = 64
GROUP = 8

COLUMNS_8 = ["tenant_id", "session_id", "seq", "is_seal", "kind", "ts", "hash", "record"]
COLUMNS_5 = ["tenant_id", "session_id", "seq", "is_seal", "record"]

INSERT_8 = """INSERT INTO records (tenant_id, session_id, seq, is_seal, kind, ts, hash, record)
    SELECT $1, $2::uuid, $3 + r.n - 1, false, r.kind, r.ts, r.hash, r.record
      FROM unnest($4::bytea[], string_to_array($5, E'\\n'), string_to_array($6, E'\\n'),
                  string_to_array($7, E'\\n'))
           WITH ORDINALITY AS r (record, kind, ts, hash, n)"""

INSERT_5 = """INSERT INTO records_5 (tenant_id, session_id, seq, is_seal, record)
    SELECT $1, $2::uuid, $3 + r.n - 1, false, r.record
      FROM unnest($4::bytea[]) WITH ORDINALITY AS r (record, n)"""

# `records` without kind, ts and hash (the bench's own table, in its own database).
CREATE_5 = """CREATE TABLE records_5 (
    tenant_id bigint NOT NULL, session_id uuid NOT NULL, seq bigint NOT NULL CHECK (seq >= 0),
    is_seal boolean NOT NULL, record bytea NOT NULL,
    status record_status NOT NULL DEFAULT 'AUTHORITATIVE',
    PRIMARY KEY (tenant_id, session_id, seq, is_seal))"""

Run = Callable[[asyncpg.Connection, list[Commit]], Awaitable[None]]


async def statement(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    for c in batches:
        status = await conn.fetchval(APPEND_AT_HEAD, *c.append_args.values())
        if status != "appended":
            raise RuntimeError(f"session {c.session_id} at {c.first_seq}: {status}")


async def grouped(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    statuses = await conn.fetchval(APPEND_GROUP, *group_args([c.append_args for c in batches]))
    if set(statuses) != {"appended"}:
        raise RuntimeError(f"a group was not appended: {statuses}")


def _events(c: Commit) -> tuple[list[str], list[str], list[str]]:
    rows = c.append_args.rows
    return rows.kinds.split("\n"), rows.ts.split("\n"), rows.hashes.split("\n")


async def insert_8(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    for c in batches:
        a = c.append_args
        r = a.rows
        await conn.execute(
            INSERT_8, a.tenant_id, a.session_id, r.first_seq, r.records, r.kinds, r.ts, r.hashes
        )


async def copy_8(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    for c in batches:
        a = c.append_args
        session = uuid.UUID(a.session_id)
        columns = zip(*_events(c), a.rows.records, strict=True)
        rows = [
            (a.tenant_id, session, a.rows.first_seq + i, False, kind, t, h, record)
            for i, (kind, t, h, record) in enumerate(columns)
        ]
        await conn.copy_records_to_table("records", records=rows, columns=COLUMNS_8)


async def insert_5(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    for c in batches:
        a = c.append_args
        await conn.execute(INSERT_5, a.tenant_id, a.session_id, a.rows.first_seq, a.rows.records)


async def copy_5(conn: asyncpg.Connection, batches: list[Commit]) -> None:
    for c in batches:
        a = c.append_args
        session = uuid.UUID(a.session_id)
        rows = [
            (a.tenant_id, session, a.rows.first_seq + i, False, record)
            for i, record in enumerate(a.rows.records)
        ]
        await conn.copy_records_to_table("records_5", records=rows, columns=COLUMNS_5)


@dataclass
class Variant:
    name: str
    run: Run
    per_call: int  # batches per call of `run`
    table: str  # where its rows go
    sealed: bool  # the service's statement: a seal per batch, and the heads moved
    postgres_ms: list[float] = field(default_factory=list)  # per batch, one per pass
    client_ms: list[float] = field(default_factory=list)
    wal_kib: list[float] = field(default_factory=list)


VARIANTS = [
    Variant("service statement, 1 batch per call", statement, 1, "records", True),
    Variant(f"service statement, {GROUP} batches per call", grouped, GROUP, "records", True),
    Variant("events only, INSERT ... SELECT, 8 columns", insert_8, 1, "records", False),
    Variant("events only, COPY, 8 columns", copy_8, 1, "records", False),
    Variant("events only, INSERT ... SELECT, 5 columns", insert_5, 1, "records_5", False),
    Variant("events only, COPY, 5 columns", copy_5, 1, "records_5", False),
]


async def check_stored(conn: asyncpg.Connection, v: Variant, batches: int) -> None:
    """Every batch's rows are there: its events, and with the service's statement
    its seal, and the heads moved past them."""
    stored = await conn.fetchval(f"SELECT count(*) FROM {v.table}")
    if v.sealed:
        heads = await conn.fetchval("SELECT coalesce(sum(next_seq), 0) FROM sessions")
        ok = stored == batches * (EVENTS + 1) and heads == batches * EVENTS
    else:
        ok = stored == batches * EVENTS
    if not ok:
        raise RuntimeError(f"{v.name}: {stored} rows stored for {batches} batches")


async def measure(dsn: str, plan: list[list[Commit]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE_5)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        # Every session's k-th batch before any session's (k+1)-th: heads stay in order.
        order = [plan[s][k] for k in range(len(plan[0])) for s in range(len(plan))]
        for n, variants in enumerate((VARIANTS, VARIANTS[::-1])):
            print(f"pass {n + 1} of 2")
            for v in variants:
                await conn.execute("TRUNCATE records, sessions, records_5")
                await conn.execute("CHECKPOINT")
                os.sync()
                calls = [order[i : i + v.per_call] for i in range(0, len(order), v.per_call)]
                wal = await conn.fetchval("SELECT pg_current_wal_lsn()")
                pg, me = process_cpu(pid), time.process_time()
                for batches in calls:
                    await v.run(conn, batches)
                pg, me = process_cpu(pid) - pg, time.process_time() - me
                wal = int(await conn.fetchval("SELECT pg_current_wal_lsn()")) - int(wal)
                await check_stored(conn, v, len(order))
                v.postgres_ms.append(1e3 * pg / len(order))
                v.client_ms.append(1e3 * me / len(order))
                v.wal_kib.append(wal / 1024 / len(order))
                print(
                    f"  {v.name:44s} PostgreSQL {v.postgres_ms[-1]:.3f} ms, "
                    f"client {v.client_ms[-1]:.3f} ms, WAL {v.wal_kib[-1]:.1f} KiB per batch",
                    flush=True,
                )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 batches per session, not 30")
    parser.add_argument("--batches", type=int, default=30, help="per session and variant")
    args = parser.parse_args()
    batches = 8 if args.quick else args.batches
    ctx = results.context()
    with bench_database("statement-bench-") as db:
        print(f"building {SESSIONS} sessions x {batches} batches of {EVENTS} events ...")
        plan = build(build_bodies(SESSIONS, batches, EVENTS), db.tenant_id, db.key_id)
        asyncio.run(measure(db.dsn, plan))
    base = VARIANTS[0]
    base_pg = fmean(base.postgres_ms)
    print(f"\n{SESSIONS * batches:,} batches per variant and pass; per batch, mean of 2 passes:")
    print(f"{'':44s} {'PostgreSQL CPU':>16s} {'x statement':>12s} {'client CPU':>11s} {'WAL':>9s}")
    for v in VARIANTS:
        pg = fmean(v.postgres_ms)
        print(
            f"{v.name:44s} {pg:13.3f} ms {pg / base_pg:12.2f} "
            f"{fmean(v.client_ms):8.3f} ms {fmean(v.wal_kib):5.1f} KiB"
        )
    path = results.save(
        "statements_quick" if args.quick else "statements",
        ctx,
        {
            "workload": {"sessions": SESSIONS, "batches_per_session": batches, "events": EVENTS},
            "postgres": {"version": db.version, "fsync": db.fsync},
            "variants": [
                {
                    "name": v.name,
                    "batches_per_call": v.per_call,
                    "postgres_ms_per_batch": [round(x, 4) for x in v.postgres_ms],
                    "client_ms_per_batch": [round(x, 4) for x in v.client_ms],
                    "wal_kib_per_batch": [round(x, 2) for x in v.wal_kib],
                    "postgres_x_statement": round(fmean(v.postgres_ms) / base_pg, 3),
                }
                for v in VARIANTS
            ],
        },
    )
    print(f"figures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
