"""Replay throughput and the server's memory while replaying (docs/protocol.md §5).

Run on purpose (not a test); it stops by itself and uses loopback only:

    python bench/replay_bench.py            # sessions of 10k and 1M records
    python bench/replay_bench.py --quick    # 10k and 100k
    python bench/replay_bench.py --sizes 1000 3000   # a smoke test

It starts a fresh embedded PostgreSQL in a temp dir and `python -m service serve`
as a subprocess, seeds each session straight into the tables (COPY of records
built by hashcore: verify_batch per 1000-event batch, sealed by the server's own
key), then times GET /v1/sessions/{id}/records while sampling the server's RSS
with psutil. Replay streams from a cursor, so the peak RSS must stay flat from
the small session to the large one: the ratio printed is measured in this run.
It also exports the large session to an evidence bundle and verifies it offline,
with the peak RSS of both commands. Figures also go to bench/results/replay.json
(replay_quick.json with --quick or --sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import orjson
import results
from processes import (
    ROOT,
    SERVICE,
    PeakRss,
    Postgres,
    Server,
    cpu_seconds,
    cpu_spent,
    free_port,
    fresh_postgres,
    measured_command,
    mib,
    rss,
    service_command,
)
from reference import ZERO
from workload import replay_events

import hashcore

BATCH = 1000
CPU_MIN_SECONDS = 0.5  # shortest replay whose CPU time is reported
COPY_ROWS = 50_000
COLUMNS = ["tenant_id", "session_id", "seq", "is_seal", "kind", "ts", "hash", "record"]
Row = tuple[int, uuid.UUID, int, bool, str, str, str, bytes]


# ---- seeding ---------------------------------------------------------------------


def event_stream(session_id: str, events: int, signer: hashcore.Signer) -> Iterator[list[Row]]:
    """Rows of a valid sealed chain, one 1000-event batch (plus its seal) at a time."""
    sid = uuid.UUID(session_id)
    prev_hash = prev_seal = ZERO
    for first in range(0, events, BATCH):
        batch = replay_events(session_id, first, min(BATCH, events - first), prev_hash)
        prev_hash = batch[-1]["hash"]
        checked = hashcore.verify_batch(orjson.dumps({"events": batch}), BATCH)
        seal = signer.seal(
            session_id,
            checked.last_seq,
            checked.first_seq,
            prev_seal,
            checked.last_hash,
            "2026-11-27T11:00:00.000000Z",
        )
        prev_seal = seal.hash
        rows: list[Row] = [
            (0, sid, s, False, k, t, h, r)
            for s, k, t, h, r in zip(
                checked.seqs,
                checked.kinds,
                checked.ts,
                checked.hashes,
                checked.records,
                strict=True,
            )
        ]
        rows.append((0, sid, seal.seq, True, "CHAIN_SEAL", seal.ts, seal.hash, seal.record))
        yield rows


async def seed(url: str, tenant: str, events: int, signer: hashcore.Signer) -> str:
    """One session of `events` events, sealed every 1000; returns its id."""
    session_id = str(uuid.uuid4())
    conn = await asyncpg.connect(url)
    try:
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", tenant)
        pending: list[Row] = []
        seals = 0
        first_ts = last_ts = head = last_seal = ""
        last_seal_seq = 0
        for rows in event_stream(session_id, events, signer):
            first_ts = first_ts or rows[0][5]
            last_ts, head = rows[-2][5], rows[-2][6]
            last_seal_seq, last_seal = rows[-1][2], rows[-1][6]
            seals += 1
            pending += [(tenant_id, *row[1:]) for row in rows]
            if len(pending) >= COPY_ROWS:
                await conn.copy_records_to_table("records", records=pending, columns=COLUMNS)
                pending = []
        if pending:
            await conn.copy_records_to_table("records", records=pending, columns=COLUMNS)
        await conn.execute(
            """INSERT INTO sessions (tenant_id, session_id, next_seq, head_hash, last_seal_seq,
                                     last_seal_hash, seal_count, first_ts, last_ts)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            tenant_id,
            session_id,
            events,
            head,
            last_seal_seq,
            last_seal,
            seals,
            first_ts,
            last_ts,
        )
        await conn.execute("ANALYZE records")
    finally:
        await conn.close()
    return session_id


# ---- measuring -------------------------------------------------------------------


@dataclass
class Replay:
    records: int
    size: int
    seconds: float
    baseline_rss: int
    peak_rss: int
    server_cpu: float  # seconds, the server's processes together

    @property
    def cpu_us_per_record(self) -> float | None:
        """None when the replay was too short for the kernel's CPU clock (it
        counts in ticks of 10 ms): a 10k-record replay takes ~0.02 s."""
        if self.seconds < CPU_MIN_SECONDS:
            return None
        return self.server_cpu / self.records * 1e6


def replay(base: str, key: str, session_id: str, pid: int) -> Replay:
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base}/v1/sessions/{session_id}/records"
    baseline = rss(pid)
    lines = size = 0
    with PeakRss(pid) as peak, httpx.Client(timeout=600) as client:
        cpu = cpu_seconds([pid])
        started = time.perf_counter()
        with client.stream("GET", url, headers=headers) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
        seconds = time.perf_counter() - started
        server_cpu = cpu_spent(cpu, cpu_seconds([pid]))
    return Replay(lines, size, seconds, baseline, peak.peak, server_cpu)


def _us(value: float | None) -> str:
    return "(too short to tell)" if value is None else f"{value:.2f} µs"


async def direct_read(url: str, session_id: str, chunk: int = 2000) -> tuple[int, float]:
    """The baseline: the same rows read straight from PostgreSQL by asyncpg, with
    a cursor in chunks as the server does, but no HTTP and no trio."""
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        records = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(
                "SELECT record FROM records WHERE session_id = $1 ORDER BY seq, is_seal",
                session_id,
            )
            while rows := await cursor.fetch(chunk):
                records += len(rows)
        return records, time.perf_counter() - started
    finally:
        await conn.close()


# ---- the run ---------------------------------------------------------------------


def bench(pg: Postgres, sizes: tuple[int, ...]) -> dict[str, object]:
    """Seed, replay, export and verify; returns every figure."""
    figures: dict[str, object] = {"sizes": list(sizes)}
    replays: list[dict[str, object]] = []
    figures["replay"] = replays
    url, tmp = pg.dsn, pg.tmp
    data_dir = tmp / "data"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [*SERVICE, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with Server(argv, env, tmp / "serve.log") as server:
        server.wait_ready(port, "/readyz")
        key = service_command(["keys", "create", "--tenant", "bench", "--scope", "read"], env)
        # The server's own key, so that its /verify and the export's keys agree.
        signer = hashcore.Signer.from_pem((data_dir / "seal_key.pem").read_bytes())

        sessions: dict[int, str] = {}
        for events in sizes:
            started = time.perf_counter()
            sessions[events] = asyncio.run(seed(url, "bench", events, signer))
            print(
                f"seeded {events:>9,} events (+{events // BATCH:,} seals) "
                f"in {time.perf_counter() - started:6.1f} s",
                flush=True,
            )

        # Warm up (imports, first connection) on the small session.
        replay(base, key, sessions[sizes[0]], server.pid)
        measured = {}
        for events in sizes:
            r = replay(base, key, sessions[events], server.pid)
            expected = events + events // BATCH
            if r.records != expected:
                raise RuntimeError(f"replayed {r.records} records, expected {expected}")
            measured[events] = r
            direct, direct_seconds = asyncio.run(direct_read(url, sessions[events]))
            assert direct == expected
            replays.append(
                {
                    "records": r.records,
                    "records_per_s": round(r.records / r.seconds),
                    "mib_per_s": round(r.size / r.seconds / (1 << 20), 1),
                    "seconds": round(r.seconds, 3),
                    "server_cpu_us_per_record": r.cpu_us_per_record,
                    "server_rss_before_bytes": r.baseline_rss,
                    "server_rss_peak_bytes": r.peak_rss,
                    "direct_cursor_records_per_s": round(direct / direct_seconds),
                    "over_direct": round(direct_seconds / r.seconds, 3),
                }
            )
            print(
                f"replay {r.records:>9,} records: {r.records / r.seconds:>10,.0f} records/s, "
                f"{r.size / r.seconds / (1 << 20):6.1f} MiB/s, {r.seconds:6.2f} s; "
                f"server CPU {_us(r.cpu_us_per_record)} per record, "
                f"RSS {mib(r.baseline_rss)} before, peak {mib(r.peak_rss)}\n"
                f"  baseline, direct asyncpg cursor read: {direct / direct_seconds:>10,.0f} "
                f"records/s; replay over HTTP = {r.seconds and direct_seconds / r.seconds:.2f}x",
                flush=True,
            )
        small, large = measured[sizes[0]], measured[sizes[-1]]
        figures["peak_rss_ratio"] = round(large.peak_rss / small.peak_rss, 3)
        print(
            f"peak RSS ratio {sizes[-1]:,} / {sizes[0]:,}: {large.peak_rss / small.peak_rss:.2f} "
            f"({large.records / small.records:.0f}x the records)"
        )

        bundle = tmp / "bundle.ndjson"
        sid = sessions[sizes[-1]]
        seconds, peak, _ = measured_command(["export", sid, "--out", str(bundle)], env)
        figures["export"] = {
            "records": large.records,
            "records_per_s": round(large.records / seconds),
            "seconds_with_startup": round(seconds, 2),
            "peak_rss_bytes": peak,
            "bundle_bytes": bundle.stat().st_size,
        }
        print(
            f"export {large.records:,} records: {large.records / seconds:,.0f} records/s "
            f"({seconds:.1f} s incl. start-up), peak RSS {mib(peak)}, "
            f"bundle {mib(bundle.stat().st_size)}"
        )
        offline = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        seconds, peak, last = measured_command(["verify", str(bundle)], offline)
        figures["verify"] = {
            "records": large.records,
            "records_per_s": round(large.records / seconds),
            "seconds_with_startup": round(seconds, 2),
            "peak_rss_bytes": peak,
        }
        print(
            f"verify {large.records:,} records offline: {large.records / seconds:,.0f} "
            f"records/s ({seconds:.1f} s incl. start-up), peak RSS {mib(peak)}"
        )
        print(f"  {last[:120]}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sessions of 10k and 100k")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        help="events of the two sessions, multiples of 1000 (overrides --quick)",
    )
    args = parser.parse_args()
    sizes: tuple[int, ...] = (10_000, 100_000) if args.quick else (10_000, 1_000_000)
    if args.sizes is not None:
        if any(n < BATCH or n % BATCH for n in args.sizes):
            parser.error(f"--sizes must be positive multiples of {BATCH}")
        sizes = tuple(args.sizes)
    ctx = results.context()
    with fresh_postgres("replay-bench-") as pg:
        figures = bench(pg, sizes)
    name = "replay" if sizes == (10_000, 1_000_000) else "replay_quick"
    path = results.save(name, ctx, figures)
    print(f"figures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
