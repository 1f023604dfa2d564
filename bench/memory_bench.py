"""A worker's memory: after many sessions retire, and its peak under the worst valid load.

Run on purpose (not a test); it stops by itself and uses loopback only:

    python bench/memory_bench.py                  # both parts, ~6 min on 2 cores
    python bench/memory_bench.py --only sessions  # 20k sessions, then retirement
    python bench/memory_bench.py --only ceiling --window 20   # shorter windows
    python bench/memory_bench.py --quick          # 2,000 sessions, 10-s windows

It starts a fresh embedded PostgreSQL in a temp dir and `python -m service serve`
(one worker: the process measured) as a subprocess, and samples the worker's RSS
with psutil every 5 ms. Each part's baseline is the same worker's RSS after a
short warm-up (every pool connection opened, every statement prepared), measured
in this run; figures are printed as that baseline + growth, and as ratios to it.

- sessions: `--sessions` sessions (default 20,000) of `--batches` small batches,
  batch k of every session before batch k+1 of any, over 64 keep-alive
  connections, so that a session waits between its batches (idle) for as long as
  possible; then waits until `chain_live_session_actors` is 0 (all retired) and
  reports RSS at start, at peak and after. Flat means "after" is near the baseline.
- ceiling: for `--window` seconds at once, clients sending valid 8 MiB batches
  (1000 events of ~8 KiB, the largest valid batch) on more connections than the
  body budget admits (the rest get 429 and retry after 50 ms), continuing long
  sessions and then re-sending their last batch (duplicates, judged under the
  lock), many small new sessions, and replays of a session of 3,000 ~8 KiB
  records; then 4 replays at once of 8 records of ~8 MiB. Run with
  `CHAIN_MAX_INFLIGHT_BYTES` at 64 MiB (the default) and at 32 MiB: the peak's
  growth over the baseline, divided by the bound, is the k of the ceiling
  `baseline + k x CHAIN_MAX_INFLIGHT_BYTES` (README, "Memory").

Figures also go to bench/results/memory.json (memory_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import results
import trio
from processes import (
    ROOT,
    SERVICE,
    PeakRss,
    Postgres,
    Server,
    free_port,
    fresh_postgres,
    rss,
    service_command,
)
from reference import ZERO
from workload import chain

import hashcore

MiB = 1 << 20
MAX_BODY = 8 * MiB
CONNECTIONS = 64
RETRY_DELAY = 0.05


def mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def _ts(seq: int) -> str:
    return f"2026-11-30T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq:06d}Z"


def session_bodies(
    rng: random.Random, batches: int, events: int, pad: int, first_seq: int = 0
) -> list[bytes]:
    """One new session's first `batches` batches of `events` events, payloads ~`pad` B."""
    sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    prev, out = ZERO, []
    for k in range(batches):
        events_ = chain(
            sid,
            first_seq + k * events,
            events,
            prev,
            kind="tool.result",
            ts=_ts,
            payload=lambda seq: {"tool": "search", "call_id": f"c{seq}", "note": "x" * pad},
        )
        prev = events_[-1]["hash"]
        out.append(orjson.dumps({"events": events_}))
    return out


def largest_pad() -> int:
    """The payload size that makes 1000 events just fit in one 8 MiB body."""
    probe = session_bodies(random.Random(0), 1, 1000, 8000)[0]
    per_event_overhead = (len(probe) - 1000 * 8000) / 1000
    return int((MAX_BODY - 4096) / 1000 - per_event_overhead) - 16  # seqs grow longer


# ---- the server --------------------------------------------------------------------


@dataclass
class Worker:
    server: Server
    port: int
    token: str

    @property
    def pid(self) -> int:
        return self.server.pid

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def start_worker(pg: Postgres, name: str, env_extra: dict[str, str]) -> Worker:
    data = pg.tmp / name
    data.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": pg.dsn,
        "CHAIN_DATA_DIR": str(data),
        "SEAL_KEY_FILE": str(pg.tmp / "seal_key.pem"),
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    token = service_command(
        ["keys", "create", "--tenant", "bench", "--scope", "ingest", "--scope", "read"], env
    )
    port = free_port()
    server = Server(
        [*SERVICE, "serve", "--port", str(port), "--data-dir", str(data)],
        env,
        data / "server.log",
    )
    server.wait_ready(port, "/readyz")
    return Worker(server, port, token)


# ---- the load ------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    replayed_bytes: int = 0
    first_error: str = ""


class Connection:
    """HTTP/1.1 keep-alive over one trio stream, for pre-encoded POSTs."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(1 << 16)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    async def request(self, data: bytes) -> tuple[int, bytes, bool]:
        """(status, body, whether the server closes the connection)."""
        await self.stream.send_all(data)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self.buf[:end]).lower()
        del self.buf[: end + 4]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            await self._fill()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return int(head[9:12]), body, b"\r\nconnection: close" in head


def post(token: str, body: bytes) -> bytes:
    return (
        b"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (token.encode(), len(body), body)
    )


async def send_in_order(
    port: int, requests: Iterator[bytes], tally: Tally, until: float = float("inf")
) -> None:
    """Send requests one after another on one connection (reopened if the server
    closes it); a 429 or 503 is retried after a short pause."""
    conn: Connection | None = None
    try:
        for req in requests:
            while time.monotonic() < until:
                if conn is None:
                    conn = Connection(await trio.open_tcp_stream("127.0.0.1", port))
                try:
                    status, body, closing = await conn.request(req)
                except (trio.BrokenResourceError, EOFError):
                    # Refused (429, Connection: close) before the body was sent in
                    # full: the server closed its side. Counted as status 0.
                    status, body, closing = 0, b"", True
                tally.statuses[status] += 1
                if closing:
                    await conn.stream.aclose()
                    conn = None
                if status not in (0, 429, 503):
                    if status != 200 and not tally.first_error:
                        tally.first_error = f"{status} {body[:300]!r}"
                    break
                await trio.sleep(RETRY_DELAY)
            else:
                return
    finally:
        if conn is not None:
            await conn.stream.aclose()


async def replay_forever(
    port: int, token: str, session_id: str, tally: Tally, until: float
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        while True:
            async with client.stream("GET", f"/v1/sessions/{session_id}/records") as response:
                tally.statuses[response.status_code] += 1
                async for chunk in response.aiter_raw():
                    tally.replayed_bytes += len(chunk)
            if time.monotonic() >= until:
                return


def warm_up(worker: Worker) -> int:
    """A few sessions on every pool connection, then the worker's settled RSS."""
    rng = random.Random(1)
    tally = Tally()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(16):  # each connection its own sessions, batches in order
                bodies = [b for _ in range(2) for b in session_bodies(rng, 2, 3, 100)]
                requests = iter([post(worker.token, b) for b in bodies])
                nursery.start_soon(send_in_order, worker.port, requests, tally)

    trio.run(main)
    assert set(tally.statuses) == {200}, (tally.statuses, tally.first_error)
    time.sleep(2)
    return rss(worker.pid)


class GaugeSampler:
    """The highest value of a /metrics gauge, sampled every second in a thread."""

    def __init__(self, worker: Worker, name: str) -> None:
        self.worker, self.name, self.peak = worker, name, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.peak = max(self.peak, self.worker.metric(self.name))
            except (httpx.HTTPError, KeyError):
                continue

    def __enter__(self) -> GaugeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- part 1: many sessions, then retirement ----------------------------------------------


def part_sessions(pg: Postgres, sessions: int, batches: int, idle: float) -> dict[str, object]:
    print(f"\n== sessions: {sessions:,} sessions x {batches} batches, actor idle {idle:g}s ==")
    t = time.perf_counter()
    rng = random.Random(7)
    per_session = [session_bodies(rng, batches, 3, 100) for _ in range(sessions)]
    print(f"  built {sessions * batches:,} bodies in {time.perf_counter() - t:.1f}s")
    worker = start_worker(pg, "sessions", {"CHAIN_ACTOR_IDLE_SECONDS": str(idle)})
    with worker.server:
        start = rss(worker.pid)
        base = warm_up(worker)
        requests = (post(worker.token, s[k]) for k in range(batches) for s in per_session)
        tally = Tally()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(CONNECTIONS):
                    nursery.start_soon(send_in_order, worker.port, requests, tally)

        t = time.perf_counter()
        with PeakRss(worker.pid) as peak, GaugeSampler(worker, "chain_live_session_actors") as live:
            trio.run(main)
            driven = time.perf_counter() - t
            deadline = time.monotonic() + idle + 60
            while worker.metric("chain_live_session_actors") > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the actors did not retire")
                time.sleep(1)
        time.sleep(3)
        after = rss(worker.pid)
        ok = tally.statuses[200] == sessions * batches
        print(
            f"  {sum(tally.statuses.values()):,} requests in {driven:.0f}s "
            f"({dict(tally.statuses)}){'' if ok else ' NOT ALL STORED: ' + tally.first_error}"
        )
        print(f"  live session actors at peak: {live.peak:,.0f}; all retired before 'after'")
        print(f"  RSS at start      {mib(start)}")
        print(f"  RSS after warm-up {mib(base)}   (baseline)")
        print(f"  RSS at peak       {mib(peak.peak)}   baseline + {mib(peak.peak - base)}")
        print(
            f"  RSS after retire  {mib(after)}   baseline + {mib(after - base)}  "
            f"(x{after / base:.2f} the baseline, {(after - base) / max(1, peak.peak - base):.0%} "
            "of the peak's growth kept)"
        )
        return {
            "sessions": sessions,
            "batches_per_session": batches,
            "actor_idle_s": idle,
            "statuses": dict(tally.statuses),
            "live_sessions_peak": live.peak,
            "rss_start_bytes": start,
            "rss_baseline_bytes": base,
            "rss_peak_bytes": peak.peak,
            "rss_after_retired_bytes": after,
        }


# ---- part 2: the worst valid load, and the ceiling ---------------------------------------


@dataclass
class CeilingLoad:
    big: list[list[bytes]]  # per big session: its 8 MiB batches in order
    small: list[list[bytes]]  # small new sessions
    long_session: str  # 3000 events of ~8 KiB, replayed during the window
    long_bodies: list[bytes]
    huge_session: str  # 8 events of ~8 MiB, replayed after it
    huge_bodies: list[bytes]


def build_ceiling_load(big_sessions: int, big_batches: int) -> CeilingLoad:
    t = time.perf_counter()
    pad = largest_pad()
    rng = random.Random(11)
    big = [session_bodies(rng, big_batches, 1000, pad) for _ in range(big_sessions)]
    assert all(len(b) <= MAX_BODY for s in big for b in s)
    small = [session_bodies(rng, 2, 3, 100) for _ in range(4000)]
    long_bodies = session_bodies(rng, 3, 1000, pad)
    huge_bodies = session_bodies(rng, 8, 1, MAX_BODY - 1024)
    assert all(len(b) <= MAX_BODY for b in huge_bodies)
    sizes = [len(b) for s in big for b in s]
    print(
        f"  built in {time.perf_counter() - t:.0f}s: {big_sessions} sessions x {big_batches} "
        f"batches of 1000 events, {mib(min(sizes))}..{mib(max(sizes))} each; 4,000 small "
        f"sessions; to replay, 3,000 events of {pad / 1024:.1f} KiB and 8 of "
        f"{mib(len(huge_bodies[0]))}"
    )
    return CeilingLoad(
        big,
        small,
        _session_id(long_bodies[0]),
        long_bodies,
        _session_id(huge_bodies[0]),
        huge_bodies,
    )


def _session_id(body: bytes) -> str:
    session_id: str = hashcore.verify_batch(body, 1000).session_id
    return session_id


def part_ceiling(pg: Postgres, load: CeilingLoad, bound: int, window: float) -> dict[str, int]:
    """The baseline and the peak RSS of a worker with this body budget under the
    load, and then under 4 replays of the largest records at once."""
    print(f"\n-- CHAIN_MAX_INFLIGHT_BYTES = {mib(bound)} --")
    worker = start_worker(pg, f"ceiling-{bound}", {"CHAIN_MAX_INFLIGHT_BYTES": str(bound)})
    with worker.server:
        base = warm_up(worker)
        # The sessions to replay, stored before the window.
        tally = Tally()
        stored = (post(worker.token, b) for b in [*load.long_bodies, *load.huge_bodies])
        trio.run(send_in_order, worker.port, stored, tally)
        assert set(tally.statuses) == {200}, (tally.statuses, tally.first_error)
        time.sleep(2)
        print(f"  baseline (after warm-up) {mib(base)}; after storing them {mib(rss(worker.pid))}")
        tally = Tally()

        def big_requests(bodies: list[bytes]) -> Iterator[bytes]:
            yield from (post(worker.token, b) for b in bodies)
            while True:  # then its last batch again: a duplicate, judged under the lock
                yield post(worker.token, bodies[-1])

        small = (post(worker.token, s[k]) for k in range(2) for s in load.small)

        async def main() -> None:
            until = time.monotonic() + window
            async with trio.open_nursery() as nursery:
                for bodies in load.big:
                    nursery.start_soon(
                        send_in_order, worker.port, big_requests(bodies), tally, until
                    )
                for _ in range(16):
                    nursery.start_soon(send_in_order, worker.port, small, tally, until)
                for _ in range(4):
                    nursery.start_soon(
                        replay_forever, worker.port, worker.token, load.long_session, tally, until
                    )

        with PeakRss(worker.pid) as peak:
            trio.run(main)
        bad = {s: n for s, n in tally.statuses.items() if s not in (0, 200, 429)}
        print(
            f"  {window:.0f}s: statuses {dict(tally.statuses)} (0: refused, closed mid-body); "
            f"replayed "
            f"{mib(tally.replayed_bytes)}{'; UNEXPECTED: ' + tally.first_error if bad else ''}"
        )
        growth = peak.peak - base
        print(f"  baseline {mib(base)}; peak {mib(peak.peak)} = baseline + {mib(growth)}")
        print(f"  growth / bound = {growth / bound:.2f}; peak / baseline = {peak.peak / base:.2f}")
        time.sleep(2)
        before = rss(worker.pid)

        async def replays() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(
                        replay_forever, worker.port, worker.token, load.huge_session, tally, 0.0
                    )

        tally = Tally()
        with PeakRss(worker.pid) as huge:
            trio.run(replays)
        print(
            f"  then 4 replays at once of {len(load.huge_bodies)} records of "
            f"{mib(len(load.huge_bodies[0]))} (no other load): RSS {mib(before)} -> peak "
            f"{mib(huge.peak)} (+{mib(huge.peak - before)}, {dict(tally.statuses)})"
        )
        return {
            "max_inflight_bytes": bound,
            "rss_baseline_bytes": base,
            "rss_peak_bytes": peak.peak,
            "huge_replays_rss_before_bytes": before,
            "huge_replays_rss_peak_bytes": huge.peak,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sessions", "ceiling"))
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=2, help="per session (default 2)")
    parser.add_argument("--idle", type=float, default=30, help="CHAIN_ACTOR_IDLE_SECONDS")
    parser.add_argument("--window", type=float, default=45, help="seconds of worst load")
    parser.add_argument("--big-sessions", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="2,000 sessions, 10-s windows")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.idle, args.window = 2_000, 5.0, 10.0
    ctx = results.context()
    figures: dict[str, object] = {}
    started = time.monotonic()
    load1, _, _ = os.getloadavg()
    print(f"memory_bench  cores {os.cpu_count()}, load average {load1:.2f}")
    with fresh_postgres("memory-bench-") as pg:
        if args.only in (None, "sessions"):
            figures["sessions"] = part_sessions(pg, args.sessions, args.batches, args.idle)
        if args.only in (None, "ceiling"):
            print(f"\n== ceiling: the worst valid load for {args.window:.0f}s ==")
            load = build_ceiling_load(args.big_sessions, 3)
            ceilings = [part_ceiling(pg, load, b, args.window) for b in (64 * MiB, 32 * MiB)]
            figures["ceiling_window_s"] = args.window
            figures["ceiling"] = ceilings
            g64, g32 = (c["rss_peak_bytes"] - c["rss_baseline_bytes"] for c in ceilings)
            slope = (g64 - g32) / (32 * MiB)
            print(
                f"\n  peak growth: {mib(g64)} at 64 MiB, {mib(g32)} at 32 MiB: "
                f"{slope:.2f} MiB per MiB of bound, + {mib(g64 - slope * 64 * MiB)} not from "
                f"request bodies; as one factor, growth <= "
                f"{max(g64 / (64 * MiB), g32 / (32 * MiB)):.2f} x CHAIN_MAX_INFLIGHT_BYTES"
            )
    print(f"\nwall time {time.monotonic() - started:.0f}s")
    path = results.save("memory_quick" if args.quick else "memory", ctx, figures)
    print(f"figures: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
