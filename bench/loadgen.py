"""The HTTP load generator of the ingest bench, and what a phase of load measured.

Raw trio sockets and pre-encoded HTTP/1.1 requests: one keep-alive connection and
one task per session, sending the session's batches in order, the connections
spread evenly over the server's worker processes. Every session first sends its
warm-up batches; then all are released together into a timed window, which ends
after a fixed time or when the batches run out. A 429 or 503 is retried after
50 ms; any other non-200 ends that session (the rest would only be seq_gap).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from processes import CpuMeter, CpuUsage, connection_owners
from workload import EVENTS

CONNECT_GAP = 0.002  # seconds between two sessions' connects


def encode_requests(bodies: list[list[bytes]], token: str) -> list[list[bytes]]:
    """`POST /v1/ingest` requests with these bodies, per session."""
    head = (
        "POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    ).encode()
    return [[b"%sContent-Length: %d\r\n\r\n%s" % (head, len(b), b) for b in s] for s in bodies]


@dataclass
class Phase:
    """One way of ingesting the workload, measured."""

    name: str
    events: int = 0  # acknowledged, warm-up included
    batches: int = 0
    timed_events: int = 0
    timed_batches: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    retried: collections.Counter[int] = field(default_factory=collections.Counter)
    first_error: str = ""
    cpu: CpuUsage = field(default_factory=CpuUsage)  # the timed window's
    workers: str = ""  # per worker process: connections held, CPU seconds
    wal_bytes: int = 0  # written during the phase, warm-up included
    spread_note: str = ""
    stored: str = ""
    ok: bool = True

    @property
    def events_per_s(self) -> float:
        return self.timed_events / self.seconds if self.seconds else 0.0

    @property
    def batches_per_s(self) -> float:
        return self.timed_batches / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")


class HttpConnection:
    """HTTP/1.1 keep-alive over one trio stream: send a pre-encoded request, read
    the status line and Content-Length, skip the body (kept only for errors)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    async def request(self, data: bytes) -> tuple[int, bytes]:
        await self.stream.send_all(data)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(buf[:end]).lower()
        del buf[: end + 4]
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError(f"no Content-Length in response: {head[:200]!r}")
        eol = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : eol if eol >= 0 else len(head)])
        while len(buf) < length:
            await self._fill()
        body = bytes(buf[:length]) if status != 200 else b""
        del buf[:length]
        return status, body


class Window:
    """Releases all sessions together after their warm-up, and marks the timed window."""

    def __init__(self, parties: int, seconds: float, on_start: Callable[[], None]) -> None:
        self.waiting = parties
        self.seconds = seconds
        self.on_start = on_start
        self.started = trio.Event()
        self.t0 = self.deadline = self.t1 = 0.0

    def arrive(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.on_start()
            self.t0 = time.perf_counter()
            self.deadline = self.t0 + self.seconds
            self.started.set()


async def session_client(
    stream: trio.SocketStream, requests: list[bytes], warm: int, window: Window, phase: Phase
) -> None:
    """Send one session's batches in order: `warm` of them, then the timed ones."""
    arrived = False
    try:
        async with stream:
            conn = HttpConnection(stream)
            for k, req in enumerate(requests):
                timed = k >= warm
                if k == warm:
                    arrived = True
                    window.arrive()
                    await window.started.wait()
                if timed and time.perf_counter() >= window.deadline:
                    return
                t = time.perf_counter()
                while True:
                    status, body = await conn.request(req)
                    phase.statuses[str(status)] += 1
                    if status not in (429, 503):
                        break
                    phase.retried[status] += 1
                    await trio.sleep(0.05)
                done = time.perf_counter()
                if status != 200:
                    # The rest of this session would only be seq_gap: stop it.
                    phase.first_error = phase.first_error or f"{status} {body[:300]!r}"
                    return
                phase.events += EVENTS
                phase.batches += 1
                if timed:
                    phase.latencies.append(done - t)
                    phase.timed_events += EVENTS
                    phase.timed_batches += 1
                    window.t1 = max(window.t1, done)
    except (OSError, EOFError, ValueError, trio.BrokenResourceError) as exc:
        phase.statuses["connection error"] += 1
        phase.first_error = phase.first_error or f"{type(exc).__name__}: {exc}"
    finally:
        if not arrived:
            window.arrive()


async def open_connections(
    port: int, n: int, server_pid: int
) -> tuple[list[trio.SocketStream], dict[int, int], int]:
    """n keep-alive connections, spread evenly over the server's worker processes.

    Which worker accepts a connection is up to the kernel and the workers' accept
    loops: 64 connections opened by one client in a row may all land on one worker
    (seen with both servers), which real traffic through a balancer would not do.
    So a connection held by the busiest worker is replaced until the spread is
    even, within a bounded number of tries. Returns the streams, the connections
    per worker, and how many were replaced.
    """
    streams: list[trio.SocketStream] = []

    async def accepted() -> tuple[list[int], dict[int, int]]:
        ports = {s.socket.getsockname()[1]: s for s in streams}
        with trio.fail_after(10):
            while True:
                workers, owners = connection_owners(server_pid, port)
                if all(p in owners for p in ports):
                    return workers, {p: owners[p] for p in ports}
                await trio.sleep(0.005)

    for _ in range(n):
        streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        await trio.sleep(CONNECT_GAP)
    replaced = 0
    while True:
        workers, owners = await accepted()
        load = {w: 0 for w in workers}
        for w in owners.values():
            load[w] = load.get(w, 0) + 1
        busiest = max(load, key=load.__getitem__)
        if max(load.values()) - min(load.values()) <= 2 or replaced >= 20 * n:
            return streams, load, replaced
        victim = next(s for s in streams if owners[s.socket.getsockname()[1]] == busiest)
        streams.remove(victim)
        await victim.aclose()
        streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        replaced += 1


def run_http_load(
    name: str,
    port: int,
    requests: list[list[bytes]],
    *,
    warm: int,
    seconds: float,
    server_pid: int,
    pg_pid: int,
) -> Phase:
    """Drive the server on `port` with each session's requests; CPU is metered over
    the timed window (this process is the client)."""
    phase = Phase(name)
    meter = CpuMeter(time.process_time, server_pid, pg_pid)
    window = Window(len(requests), seconds, meter.start)
    spread: dict[int, int] = {}

    async def main() -> None:
        with trio.fail_after(seconds + 180):
            streams, load, replaced = await open_connections(port, len(requests), server_pid)
            spread.update(load)
            phase.spread_note = f"{replaced} connection(s) replaced to even them out"
            async with trio.open_nursery() as nursery:
                for stream, reqs in zip(streams, requests, strict=True):
                    nursery.start_soon(session_client, stream, reqs, warm, window, phase)

    trio.run(main)
    phase.cpu = meter.stop()
    phase.workers = ", ".join(
        f"pid {pid}: {n} conns, {phase.cpu.by_pid.get(pid, 0.0):.1f}s" for pid, n in spread.items()
    )
    phase.seconds = window.t1 - window.t0
    return phase
