"""The client SDK (`agent_chain`), measured: `record()` latency with the journal
on, sustained events/s through a real service, and memory during an outage.

Run on purpose (not a test):

    .venv/bin/python bench/sdk_bench.py            # about 2-3 minutes
    .venv/bin/python bench/sdk_bench.py --quick    # a smoke test

On a fresh embedded PostgreSQL (fsync on) with `python -m service serve
--workers 2` on loopback, every payload about 1 KB of JSON (as JCS):

1. `record()` latency, p50/p99/p99.9/max, while the sender thread drains to the
   server: with the default fsync policy (the sender fsyncs the journal every
   200 ms and on flush) and with `fsync_every_record=True`. Baselines measured
   in the same run, in the same loop: a bare `os.write` of the same line to an
   O_APPEND file; `json.dumps` + `hashlib.sha256` of the payload; `os.write` +
   `os.fsync`.
2. Sustained throughput: one client, 8 sessions, events recorded as fast as one
   thread can, until every one is acknowledged under a verified seal. Baseline:
   the same events pre-built into 100-event batches and POSTed by a bare
   `httpx.Client` from one thread, one batch at a time (what the sender does,
   without recording, journaling or verifying).
3. An outage: 100k events recorded while nothing listens on the server's port;
   the process's RSS sampled every 10k events (it must stay flat: the sender
   reads from the journal, nothing is queued in memory); then the server starts
   on that port and the backlog drains.

Figures go to bench/results/sdk.json (sdk_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import results
from agent_chain import Client, Session
from agent_chain.canonical import jcs
from agent_chain.records import ZERO_HASH, event_line, hashed_bytes, new_session_id, utc_timestamp
from processes import Server, free_port, mib
from systems import bench_database, server_argv, serving

PAYLOAD_BYTES = 1024
SESSIONS = 8


def payload(i: int) -> dict[str, Any]:
    """A tool call's event: about PAYLOAD_BYTES of JSON once canonical."""
    p: dict[str, Any] = {
        "tool": "search_policy",
        "tool_call_id": f"call_{i:08d}",
        "args": {"query": "refund for a late delivery", "k": 5},
        "i": i,
        "text": "",
    }
    p["text"] = "x" * (PAYLOAD_BYTES - len(jcs(p)))
    return p


def pct(ns: list[int], q: float) -> float:
    """The q-quantile of `ns`, in microseconds."""
    s = sorted(ns)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def summary(ns: list[int]) -> dict[str, float]:
    return {
        "n": len(ns),
        "p50_us": pct(ns, 0.50),
        "p99_us": pct(ns, 0.99),
        "p999_us": pct(ns, 0.999),
        "max_us": max(ns) / 1000,
        "mean_us": statistics.fmean(ns) / 1000,
    }


def timed(n: int, step: Callable[[int], object]) -> list[int]:
    """Wall-clock ns of each call: what the caller waits, preemption included."""
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        step(i)
        out.append(clock() - t0)
    return out


def timed_both(n: int, step: Callable[[int], object]) -> tuple[list[int], list[int]]:
    """Wall-clock ns and this thread's CPU ns of each call (the CPU time leaves
    out the time the thread was preempted or waited for a lock or the GIL)."""
    wall, cpu = [], []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(n):
        c0 = cpu_clock()
        t0 = clock()
        step(i)
        t1 = clock()
        cpu.append(cpu_clock() - c0)
        wall.append(t1 - t0)
    return wall, cpu


def row(name: str, s: dict[str, float], base: dict[str, float] | None = None) -> None:
    ratio = ""
    if base is not None:
        ratio = (
            f"   x{s['p50_us'] / base['p50_us']:.1f} p50, x{s['p99_us'] / base['p99_us']:.1f} p99"
        )
    print(
        f"  {name:<38} p50 {s['p50_us']:8.1f} µs  p99 {s['p99_us']:8.1f} µs  "
        f"p99.9 {s['p999_us']:8.1f} µs  max {s['max_us']:9.1f} µs{ratio}"
    )


# ---- 1. record() latency ------------------------------------------------------------


def baselines(tmp: Path, n: int, n_fsync: int) -> dict[str, dict[str, float]]:
    sample = payload(0)
    line = event_line(
        hashed_bytes(new_session_id(), 0, "tool.call", utc_timestamp(), jcs(sample), ZERO_HASH),
        "0" * 64,
    )
    line += b"\n"
    fd = os.open(tmp / "baseline.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        append = timed(n, lambda i: os.write(fd, line))

        def write_fsync(i: int) -> None:
            os.write(fd, line)
            os.fsync(fd)

        fsync = timed(n_fsync, write_fsync)
    finally:
        os.close(fd)
    payloads = [payload(i) for i in range(n)]

    def dumps_sha(i: int) -> None:
        text = json.dumps(payloads[i], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        hashlib.sha256(text.encode()).hexdigest()

    return {
        "append": summary(append),
        "json_sha256": summary(timed(n, dumps_sha)),
        "append_fsync": summary(fsync),
    }


def record_latency(url: str, token: str, tmp: Path, n: int, *, every: bool) -> dict[str, Any]:
    client = Client(url, token, journal_dir=tmp / f"journal-{every}", fsync_every_record=every)
    try:
        session = client.session()
        warm = max(200, n // 10)
        for i in range(warm):
            session.record("tool.call", payload(i))
        payloads = [payload(i) for i in range(n)]
        gc.collect()
        ns, cpu = timed_both(n, lambda i: session.record("tool.call", payloads[i]))
        session.close()
        report = client.flush(timeout=300)
        assert report.complete, report
    finally:
        client.close(timeout=30)
    return {**summary(ns), "cpu": summary(cpu)}


# ---- 2. throughput ----------------------------------------------------------------------


def prebuilt_batches(events: int, sessions: int) -> list[list[bytes]]:
    """Chained events for `sessions` new sessions, as 100-event ingest bodies."""
    per = events // sessions
    bodies: list[list[bytes]] = []
    for _ in range(sessions):
        sid, prev, lines = new_session_id(), ZERO_HASH, []
        for seq in range(per):
            hashed = hashed_bytes(sid, seq, "tool.call", utc_timestamp(), jcs(payload(seq)), prev)
            prev = hashlib.sha256(hashed).hexdigest()
            lines.append(event_line(hashed, prev))
        bodies.append(
            [b'{"events":[' + b",".join(lines[i : i + 100]) + b"]}" for i in range(0, per, 100)]
        )
    return bodies


def bare_httpx(url: str, token: str, events: int) -> dict[str, float]:
    bodies = prebuilt_batches(events, SESSIONS)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        t0 = time.perf_counter()
        for i in range(len(bodies[0])):
            for s in bodies:
                resp = http.post("/v1/ingest", content=s[i])
                assert resp.status_code == 200, resp.text
        elapsed = time.perf_counter() - t0
    return {"events": events, "seconds": elapsed, "events_per_s": events / elapsed}


def sdk_throughput(url: str, token: str, tmp: Path, events: int) -> dict[str, float]:
    client = Client(url, token, journal_dir=tmp / "journal-throughput")
    try:
        sessions: list[Session] = [client.session() for _ in range(SESSIONS)]
        payloads = [payload(i) for i in range(events // SESSIONS)]
        gc.collect()
        t0 = time.perf_counter()
        for p in payloads:
            for s in sessions:
                s.record("tool.call", p)
        recorded = time.perf_counter() - t0
        for s in sessions:
            s.close()
        report = client.flush(timeout=600)
        elapsed = time.perf_counter() - t0
        assert report.complete and report.acknowledged == events, report
    finally:
        client.close(timeout=30)
    return {
        "events": events,
        "record_seconds": recorded,
        "records_per_s": events / recorded,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
    }


# ---- 3. outage -----------------------------------------------------------------------------


def outage(db: Any, token: str, events: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    me = psutil.Process()
    gc.collect()
    rss0 = me.memory_info().rss
    errors: list[Exception] = []
    client = Client(url, token, journal_dir=db.tmp / "journal-outage", on_error=errors.append)
    samples: list[dict[str, int]] = []
    try:
        session = client.session()
        step = events // 10
        for i in range(events):
            session.record("tool.call", payload(i))
            if (i + 1) % step == 0:
                st = client.status()
                samples.append(
                    {
                        "events": i + 1,
                        "rss": me.memory_info().rss,
                        "pending_bytes": st.pending_bytes,
                    }
                )
                print(
                    f"  {i + 1:>7} events recorded, server down: RSS {mib(samples[-1]['rss'])}, "
                    f"journal {mib(st.pending_bytes)} pending, {len(errors)} errors reported"
                )
        session.close()
        argv, ready = server_argv("ours", port, db.tmp)
        with Server(argv, {**os.environ, "DATABASE_URL": db.dsn}, db.tmp / "outage.log") as srv:
            srv.wait_ready(port, ready)
            t0 = time.perf_counter()
            report = client.flush(timeout=900)
            drain = time.perf_counter() - t0
        assert report.complete and report.acknowledged == events, report
        rss_end = me.memory_info().rss
        print(
            f"  server up: {events} events drained in {drain:.1f} s ({events / drain:,.0f}/s), "
            f"RSS {mib(rss_end)}"
        )
    finally:
        client.close(timeout=30)
    rss = [s["rss"] for s in samples]
    return {
        "events": events,
        "rss_before_client": rss0,
        "samples": samples,
        "rss_growth_first_to_last_sample": rss[-1] - rss[0],
        "journal_bytes": samples[-1]["pending_bytes"],
        "errors_reported": len(errors),
        "drain_seconds": drain,
        "drain_events_per_s": events / drain,
        "rss_after_drain": rss_end,
    }


def phase_latency(url: str, token: str, tmp: Path, n: int, n_fsync: int) -> dict[str, Any]:
    print(f"1. record() latency, {PAYLOAD_BYTES} B payloads, journal on, sending to {url}")
    base = baselines(tmp, n, n_fsync)
    lat = record_latency(url, token, tmp, n, every=False)
    lat_every = record_latency(url, token, tmp, n_fsync, every=True)
    row("baseline: os.write(line)", base["append"])
    row("baseline: json.dumps + sha256", base["json_sha256"])
    row("record(), fsync every 200 ms (default)", lat, base["append"])
    row("baseline: os.write + os.fsync", base["append_fsync"])
    row("record(), fsync_every_record=True", lat_every, base["append_fsync"])
    row("record(), default: thread CPU time", lat["cpu"], base["json_sha256"])
    load1, load5, _ = os.getloadavg()
    print(f"  (load average {load1:.1f} / {load5:.1f} on {os.cpu_count()} cores)")
    met = "met" if lat["p99_us"] < 1000 else "MISSED"
    print(f"  goal: p99 < 1000 µs with the default policy: {met}")
    return {"baselines": base, "default": lat, "fsync_every_record": lat_every}


def phase_throughput(url: str, token: str, tmp: Path, events: int) -> dict[str, Any]:
    print(f"\n2. sustained throughput: {events:,} events, {SESSIONS} sessions, serve --workers 2")
    bare = bare_httpx(url, token, events)
    sdk = sdk_throughput(url, token, tmp, events)
    ratio = sdk["events_per_s"] / bare["events_per_s"]
    print(f"  baseline: bare httpx, pre-built batches    {bare['events_per_s']:>9,.0f} events/s")
    print(
        f"  SDK: recorded -> acknowledged, seals verified {sdk['events_per_s']:>7,.0f} events/s"
        f"   x{ratio:.2f} of the baseline (record() alone: {sdk['records_per_s']:,.0f}/s)"
    )
    return {"bare_httpx": bare, "sdk": sdk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, n_fsync, tput, down = (
        (2_000, 300, 8_000, 10_000) if args.quick else (20_000, 3_000, 200_000, 100_000)
    )
    logging.getLogger("agent_chain").setLevel(logging.CRITICAL)  # the outage's retries
    started = results.context()
    data: dict[str, Any] = {"payload_bytes": PAYLOAD_BYTES}
    with bench_database("sdk-bench-") as db, tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        with serving(db, "ours") as (_, port):
            url = f"http://127.0.0.1:{port}"
            data["latency"] = phase_latency(url, db.token, tmp, n, n_fsync)
            data["throughput"] = phase_throughput(url, db.token, tmp, tput)
        print(f"\n3. {down:,} events recorded during a server outage")
        data["outage"] = out = outage(db, db.token, down)
        growth = out["rss_growth_first_to_last_sample"]
        journal = out["journal_bytes"] - out["samples"][0]["pending_bytes"]
        print(
            f"  RSS growth from the first to the last sample: {mib(growth)}, "
            f"while the journal grew {mib(journal)}"
        )
    path = results.save("sdk_quick" if args.quick else "sdk", started, data)
    print(f"\nfigures: {path}")


if __name__ == "__main__":
    main()
