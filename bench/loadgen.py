"""The HTTP load generator of the benches, and what a phase of load measured.

Raw trio sockets and pre-encoded HTTP/1.1 requests: one keep-alive connection and
one task per session, sending the session's batches in order, the connections
spread evenly over the server's worker processes. Every session first sends its
warm-up batches; then all are released together. A 429 or 503 is retried after
50 ms; any other non-200 ends that session (the rest would only be seq_gap).

Two ways of loading:

- closed loop (`run_http_load`, the maximum): each session sends its next batch as
  soon as the previous one is answered, for a fixed time or until the batches run
  out. Latency is from send to answer; the offered load follows the server.
- open loop (`run_open_loop`, the latency curve): batches arrive on a fixed
  schedule (`arrival_schedule`: Poisson or evenly spaced at a given rate, dealt
  round-robin to the sessions, so each session's batches stay in order). A batch
  whose session is still waiting for its previous answer queues behind it, in the
  client, as an agent's would. Latency is measured from the batch's *scheduled*
  arrival, not from when it could be sent, so a slow answer counts against every
  batch it delays (no coordinated omission). The generator's own lateness (send
  time minus the later of schedule and previous answer) is recorded apart: if it
  grows, the generator, not the server, is the bottleneck.
"""

from __future__ import annotations

import collections
import random
import socket
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
    offered_events_per_s: float = 0.0  # open loop: the schedule's rate
    lags: list[float] = field(default_factory=list)  # open loop: the generator's lateness
    reconnects: int = 0  # idle connections the server had closed, reopened
    span: float = 0.0  # open loop: seconds from the first scheduled arrival to the last

    @property
    def events_per_s(self) -> float:
        return self.timed_events / self.seconds if self.seconds else 0.0

    @property
    def overloaded(self) -> bool:
        """Open loop: the server answered the last batch well after the last arrival
        (more than a second and 10 % of the schedule): its queue did not drain."""
        return self.seconds - self.span > max(1.0, 0.1 * self.span)

    @property
    def batches_per_s(self) -> float:
        return self.timed_batches / self.seconds if self.seconds else 0.0

    def acknowledged(self, events: int, latency: float | None) -> None:
        """One batch answered 200: `latency` if it was timed, None in the warm-up."""
        self.events += events
        self.batches += 1
        if latency is not None:
            self.latencies.append(latency)
            self.timed_events += events
            self.timed_batches += 1

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        """The q-quantile of the latencies (or of `values`), in ms."""
        lat = sorted(self.latencies if values is None else values)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    def summary(self) -> dict[str, object]:
        """Every figure of the phase, for the JSON files."""
        bad = {k: v for k, v in self.statuses.items() if k not in ("200", "ok")}
        out: dict[str, object] = {
            "name": self.name,
            "events_per_s": round(self.events_per_s, 1),
            "batches_per_s": round(self.batches_per_s, 2),
            "window_s": round(self.seconds, 3),
            "timed_events": self.timed_events,
            "timed_batches": self.timed_batches,
            "acknowledged_events": self.events,
            "acknowledged_batches": self.batches,
            "latency_ms": {
                "p50": round(self.percentile(0.50), 3),
                "p90": round(self.percentile(0.90), 3),
                "p99": round(self.percentile(0.99), 3),
                "p999": round(self.percentile(0.999), 3),
                "max": round(max(self.latencies) * 1000, 3) if self.latencies else None,
                "samples": len(self.latencies),
            },
            "cpu_s": {
                "client": round(self.cpu.client, 2),
                "server": round(self.cpu.server, 2),
                "postgres": round(self.cpu.pg, 2),
                "other": round(self.cpu.other, 2),
                "idle": round(self.cpu.idle, 2),
                "metered_s": round(self.cpu.wall, 3),
            },
            "wal_bytes": self.wal_bytes,
            "non_200": bad,
            "retried": {str(k): v for k, v in self.retried.items()},
            "reconnects": self.reconnects,
            "first_error": self.first_error,
            "stored": self.stored,
            "stored_ok": self.ok,
        }
        if self.offered_events_per_s:
            out["offered_events_per_s"] = round(self.offered_events_per_s, 1)
            out["schedule_span_s"] = round(self.span, 3)
            out["overloaded"] = self.overloaded
            out["generator_lag_ms"] = {
                "p50": round(self.percentile(0.5, self.lags), 3),
                "p99": round(self.percentile(0.99, self.lags), 3),
                "max": round(max(self.lags) * 1000, 3) if self.lags else None,
            }
        return out


class HttpConnection:
    """HTTP/1.1 keep-alive over one trio stream: send a pre-encoded request, read
    the status line and Content-Length, skip the body (kept only for errors)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        # The server said it closes the connection after this answer (hypercorn
        # does after `keep_alive_max_requests`, 1,000, requests on one connection).
        self.closing = False

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
        self.closing = b"\r\nconnection: close" in head
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


IDLE_CHECK = 1.0  # seconds idle after which a connection is checked before reuse


def closed_by_server(stream: trio.SocketStream) -> bool:
    """Whether the server closed this idle keep-alive connection (its keep-alive
    timeout: uvicorn's and hypercorn's are 5 s), peeking without blocking."""
    with socket.fromfd(stream.socket.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
        try:
            return dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


async def answered(
    conn: HttpConnection, req: bytes, phase: Phase, port: int, idle: float
) -> tuple[HttpConnection, int, bytes]:
    """Send `req` (on a new connection if the server closed `conn`, idle for
    `idle` seconds) until it is not refused for load (429/503, retried after
    50 ms); the connection it was answered on and the answer, counted in `phase`."""
    conn = await reopened_if_closed(conn, idle, port, phase)
    while True:
        status, body = await conn.request(req)
        phase.statuses[str(status)] += 1
        if status not in (429, 503):
            return conn, status, body
        phase.retried[status] += 1
        await trio.sleep(0.05)
        conn = await reopened_if_closed(conn, 0.0, port, phase)


async def reopened_if_closed(
    conn: HttpConnection, idle: float, port: int, phase: Phase
) -> HttpConnection:
    """`conn`, or a new connection if the server said it closes it, or if it sat
    idle long enough for the server to close it (as a client's pool would reopen
    it; that is checked only after IDLE_CHECK)."""
    if not conn.closing and (idle <= IDLE_CHECK or not closed_by_server(conn.stream)):
        return conn
    await conn.stream.aclose()
    phase.reconnects += 1
    return HttpConnection(await trio.open_tcp_stream("127.0.0.1", port))


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
    stream: trio.SocketStream,
    requests: list[bytes],
    warm: int,
    window: Window,
    phase: Phase,
    events: int = EVENTS,
) -> None:
    """Send one session's batches in order: `warm` of them, then the timed ones.
    A connection left idle at the start line long enough for the server to close
    it (a slow server warming up many sessions) is reopened first."""
    arrived = False
    port = stream.socket.getpeername()[1]
    conn = HttpConnection(stream)
    try:
        try:
            last_io = time.perf_counter()
            for k, req in enumerate(requests):
                timed = k >= warm
                if k == warm:
                    arrived = True
                    window.arrive()
                    await window.started.wait()
                if timed and time.perf_counter() >= window.deadline:
                    return
                t = time.perf_counter()
                conn, status, body = await answered(conn, req, phase, port, t - last_io)
                done = last_io = time.perf_counter()
                if status != 200:
                    # The rest of this session would only be seq_gap: stop it.
                    phase.first_error = phase.first_error or f"{status} {body[:300]!r}"
                    return
                phase.acknowledged(events, done - t if timed else None)
                if timed:
                    window.t1 = max(window.t1, done)
        finally:
            await conn.stream.aclose()
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
    events: int = EVENTS,
) -> Phase:
    """Closed loop: drive the server on `port` with each session's requests; CPU is
    metered over the timed window (this process is the client)."""
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
                    nursery.start_soon(session_client, stream, reqs, warm, window, phase, events)

    trio.run(main)
    phase.cpu = meter.stop()
    phase.workers = ", ".join(
        f"pid {pid}: {n} conns, {phase.cpu.by_pid.get(pid, 0.0):.1f}s" for pid, n in spread.items()
    )
    phase.seconds = window.t1 - window.t0
    return phase


# ---- open loop ---------------------------------------------------------------------

LEAD = 0.2  # seconds between the last session's warm-up and the first scheduled arrival


def arrival_schedule(
    sessions: int, batches: int, rate: float, arrivals: str, seed: int = 1
) -> list[list[float]]:
    """`batches` arrivals at `rate` per second in all, as seconds from the start, dealt
    round-robin to the sessions (each session's list is increasing). "poisson": the
    gaps are exponential (independent agents); "uniform": evenly spaced."""
    rng = random.Random(seed)
    per: list[list[float]] = [[] for _ in range(sessions)]
    t = 0.0
    for k in range(batches):
        t = t + rng.expovariate(rate) if arrivals == "poisson" else k / rate
        per[k % sessions].append(t)
    return per


async def open_session_client(
    stream: trio.SocketStream,
    requests: list[bytes],
    warm: int,
    offsets: list[float],
    window: Window,
    phase: Phase,
    events: int,
) -> None:
    """Send `warm` batches closed loop, then one batch at each scheduled time (or as
    soon as the previous one is answered, if later); latency from the schedule.
    A connection idle long enough for the server to close it is reopened before
    the next batch is sent on it (as a client's pool would), the time counted."""
    arrived = False
    port = stream.socket.getpeername()[1]
    conn = HttpConnection(stream)
    try:
        try:
            for req in requests[:warm]:
                status, body = await conn.request(req)
                phase.statuses[str(status)] += 1
                if status != 200:
                    phase.first_error = phase.first_error or f"warm-up {status} {body[:300]!r}"
                    return
                phase.acknowledged(events, None)
            arrived = True
            window.arrive()
            await window.started.wait()
            t0 = window.t0 + LEAD
            previous = 0.0  # when the previous answer came
            last_io = time.perf_counter()
            for req, offset in zip(requests[warm:], offsets, strict=False):
                due = t0 + offset
                if (wait := due - time.perf_counter()) > 0:
                    await trio.sleep(wait)
                sent = time.perf_counter()
                phase.lags.append(sent - max(due, previous))
                conn, status, body = await answered(conn, req, phase, port, sent - last_io)
                previous = last_io = time.perf_counter()
                if status != 200:
                    phase.first_error = phase.first_error or f"{status} {body[:300]!r}"
                    return
                phase.acknowledged(events, previous - due)
                window.t1 = max(window.t1, previous)
        finally:
            await conn.stream.aclose()
    except (OSError, EOFError, ValueError, trio.BrokenResourceError) as exc:
        phase.statuses["connection error"] += 1
        phase.first_error = phase.first_error or f"{type(exc).__name__}: {exc}"
    finally:
        if not arrived:
            window.arrive()


def run_open_loop(
    name: str,
    port: int,
    requests: list[list[bytes]],
    schedule: list[list[float]],
    *,
    warm: int,
    rate: float,
    server_pid: int,
    pg_pid: int,
    events: int = EVENTS,
    max_seconds: float = 600.0,
) -> Phase:
    """Open loop: after the warm-up, session i sends `requests[i][warm + j]` at
    `schedule[i][j]` seconds from the start (`rate` batches/s offered in all). The
    window runs from the first scheduled arrival to the last answer; CPU is metered
    over it (this process is the client)."""
    phase = Phase(name, offered_events_per_s=rate * events)
    phase.span = max((s[-1] for s in schedule if s), default=0.0)
    meter = CpuMeter(time.process_time, server_pid, pg_pid)
    window = Window(len(requests), float("inf"), meter.start)
    spread: dict[int, int] = {}

    async def main() -> None:
        with trio.fail_after(phase.span + max_seconds):
            streams, load, replaced = await open_connections(port, len(requests), server_pid)
            spread.update(load)
            phase.spread_note = f"{replaced} connection(s) replaced to even them out"
            async with trio.open_nursery() as nursery:
                for stream, reqs, offsets in zip(streams, requests, schedule, strict=True):
                    nursery.start_soon(
                        open_session_client, stream, reqs, warm, offsets, window, phase, events
                    )

    trio.run(main)
    phase.cpu = meter.stop()
    phase.workers = ", ".join(
        f"pid {pid}: {n} conns, {phase.cpu.by_pid.get(pid, 0.0):.1f}s" for pid, n in spread.items()
    )
    phase.seconds = window.t1 - (window.t0 + LEAD) if window.t1 else 0.0
    return phase
