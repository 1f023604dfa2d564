"""Writers: several concurrent tasks, each writing many sessions in order.

Events are built here with `rfc8785` and hashlib (PROTOCOL §1), never with the
service's code. A batch is retried with the same bytes after a connection error,
a 503 or a 429 (after its `Retry-After`), so that a batch whose acknowledgement
was lost comes back `"duplicate": true`. Every answer other than 200 is recorded
with its times, for the report to place it inside or outside a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import rfc8785

from .ledger import Answer, Batch, Ledger, SessionLog

ZERO = "0" * 64
# A client-side limit far above anything the service should take (its database
# deadline is a few seconds): a request that reaches it is a hang, not an outage.
REQUEST_TIMEOUT = 60.0


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Control:
    """Shared by the writers and the run: when to stop starting batches, when to
    give up on the one in hand."""

    draining: bool = False  # finish the batch in hand, start no other
    abandon: bool = False  # stop now, even with a batch unacknowledged


class Writer:
    def __init__(
        self,
        index: int,
        base_url: str,
        token: str,
        ledger: Ledger,
        control: Control,
        *,
        seed: int,
        max_batch: int,
        max_batches_per_session: int,
    ) -> None:
        self.index = index
        self.base_url = base_url
        self.token = token
        self.ledger = ledger
        self.control = control
        self.rng = random.Random(seed)
        self.max_batch = max_batch
        self.max_batches = max_batches_per_session
        self.state = "starting"  # what it is doing now, for diagnostics
        self.since = time.monotonic()

    def doing(self, state: str) -> None:
        self.state, self.since = state, time.monotonic()

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=5.0)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, limits=limits
        ) as client:
            while not self.control.draining:
                await self.session(client)

    async def session(self, client: httpx.AsyncClient) -> None:
        log = SessionLog(str(uuid.uuid4()), self.index)
        self.ledger.sessions.append(log)
        prev = ZERO
        for _ in range(self.rng.randint(2, self.max_batches)):
            if self.control.draining:
                return
            first = log.events_sent
            events = []
            for seq in range(first, first + self.rng.randint(1, self.max_batch)):
                event: dict[str, Any] = {
                    "session_id": log.session_id,
                    "seq": seq,
                    "kind": self.rng.choice(("llm.call", "tool.call", "tool.result", "decision")),
                    "ts": now_ts(),
                    "payload": {
                        "writer": self.index,
                        "step": seq,
                        "text": f"soak ✓ {self.rng.getrandbits(64):016x}",
                        "score": self.rng.randint(0, 1000) / 8,
                        "tags": ["a", "b"][: self.rng.randint(0, 2)],
                    },
                    "prev_hash": prev,
                }
                event["hash"] = prev = event_hash(event)
                log.digests += bytes.fromhex(prev)
                events.append(event)
            batch = Batch(first, first + len(events) - 1)
            log.batches.append(batch)
            body = json.dumps({"events": events}, ensure_ascii=False).encode()
            if not await self.send(client, log, batch, body):
                return

    async def send(
        self, client: httpx.AsyncClient, log: SessionLog, batch: Batch, body: bytes
    ) -> bool:
        """Until acknowledged: True; False if the session must be given up."""
        ledger = self.ledger
        others = 0  # answers that are neither 200, 429, 503 nor a connection error
        while not self.control.abandon:
            batch.attempts += 1
            ledger.requests += 1
            sent_at = time.monotonic()
            self.doing(f"POST {log.session_id} {batch.first}..{batch.last}")
            try:
                resp = await client.post("/v1/ingest", content=body)
            except httpx.TimeoutException as exc:
                what = "conn:ConnectTimeout" if isinstance(exc, httpx.ConnectTimeout) else "timeout"
                self.answer(batch, sent_at, what)
                await asyncio.sleep(0.2)
                continue
            except httpx.TransportError as exc:
                self.answer(batch, sent_at, f"conn:{type(exc).__name__}")
                await asyncio.sleep(self.rng.uniform(0.05, 0.25))
                continue
            if resp.status_code == 200:
                self.acknowledged(log, batch, resp)
                return True
            code = ""
            with contextlib.suppress(ValueError):
                code = str(resp.json().get("code", ""))
            retry_after = resp.headers.get("retry-after")
            self.answer(batch, sent_at, str(resp.status_code), code, retry_after)
            if resp.status_code in (429, 503):
                try:
                    wait = float(int(retry_after or ""))
                except ValueError:
                    ledger.violations.append(
                        f"{resp.status_code} without a valid Retry-After ({retry_after!r})"
                    )
                    wait = 1.0
                self.doing(f"Retry-After {wait:.0f}s after {resp.status_code}")
                await asyncio.sleep(max(wait, 0.0))
                continue
            ledger.violations.append(
                f"session {log.session_id} batch {batch.first}..{batch.last}: "
                f"{resp.status_code} {code}: {resp.text[:300]}"
            )
            if resp.status_code == 409:
                log.abandoned = f"409 {code}"
                return False
            others += 1
            if others >= 5:
                log.abandoned = f"{resp.status_code} {code}"
                return False
            await asyncio.sleep(1.0)
        return False

    def answer(
        self,
        batch: Batch,
        sent_at: float,
        what: str,
        code: str = "",
        retry_after: str | None = None,
    ) -> None:
        now = time.monotonic()
        batch.failures.append(what.split(":")[0] if what.startswith("conn:") else what)
        batch.failed_at.append(now)
        self.ledger.answers.append(Answer(sent_at, now, what, code, retry_after, self.index))

    def acknowledged(self, log: SessionLog, batch: Batch, resp: httpx.Response) -> None:
        """Record the 200 and check what it says against what was sent."""
        ledger = self.ledger
        body = resp.json()
        n = batch.last - batch.first + 1
        last_hash = log.event_hash(batch.last)
        seal = body.get("seal") or {}
        payload = seal.get("payload") or {}
        problems = []
        if body.get("session_id") != log.session_id:
            problems.append("session_id")
        if body.get("head") != {"seq": batch.last, "hash": last_hash}:
            problems.append(f"head {body.get('head')}")
        if body.get("duplicate"):
            if (body.get("accepted"), body.get("duplicates")) != (0, n):
                problems.append("duplicate counts")
        elif (body.get("accepted"), body.get("duplicates")) != (n, 0):
            problems.append(f"accepted {body.get('accepted')} duplicates {body.get('duplicates')}")
        if (seal.get("kind"), seal.get("seq"), seal.get("prev_hash")) != (
            "CHAIN_SEAL",
            batch.last,
            last_hash,
        ):
            problems.append("seal does not pin the batch's last event")
        if payload.get("first_seq") != batch.first:
            problems.append(f"seal first_seq {payload.get('first_seq')} != {batch.first}")
        if problems:
            ledger.violations.append(
                f"200 for session {log.session_id} batch {batch.first}..{batch.last}: "
                + "; ".join(problems)
            )
        batch.acked = True
        batch.duplicate = bool(body.get("duplicate"))
        batch.seal_hash = str(seal.get("hash", ""))
        batch.acked_at = ledger.last_ack_at = time.monotonic()
        ledger.acks += 1
