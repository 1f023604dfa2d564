"""The soak's checker, independent of the service's code: it imports neither
`service` nor `hashcore`. It reads what PostgreSQL holds with asyncpg, the public
keys from `GET /v1/keys`, and checks, with rfc8785, hashlib and cryptography:

- PROTOCOL §6 for every stored session: events 0..n-1 linked, every hash
  recomputes, each stored record is the JCS of itself (§7), seals pinned to the
  event at their seq, linked through `prev_seal`, signed by the key they name,
  every event covered, the last record a seal; the head row agrees;
- against what the writers sent and were told (the ledger): every stored event
  is one that was sent, every acknowledged batch is stored exactly once and
  whole, sealed by the seal its 200 carried; no batch (acknowledged or not) is
  partly stored; every seal covers exactly one batch;
- for a sample of sessions, the replay over HTTP is byte for byte what is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .ledger import Ledger, SessionLog

ZERO = "0" * 64
MAX_PROBLEMS = 50  # problems listed in the report (all are counted)


@dataclass
class Stored:
    """One session as PostgreSQL holds it."""

    records: list[tuple[int, bool, str, bytes]] = field(default_factory=list)  # seq, seal, hash
    head: dict[str, Any] | None = None


@dataclass
class Findings:
    sessions_stored: int = 0
    events_stored: int = 0
    seals_stored: int = 0
    batches_sent: int = 0
    batches_acknowledged: int = 0
    events_acknowledged: int = 0
    acknowledged_duplicate: int = 0  # acknowledged by a "duplicate": true answer
    lost_batches: int = 0  # acknowledged, but not stored whole as sent
    partial_batches: int = 0  # some of a batch's events stored, not all (or a seal that splits one)
    unacknowledged_stored: int = 0  # never acknowledged (run ended), but stored whole
    unacknowledged_absent: int = 0
    chain_failures: int = 0  # sessions that fail §6
    unknown_sessions: int = 0  # stored, but no writer sent them
    replay_checked: int = 0
    replay_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not (
            self.lost_batches
            or self.partial_batches
            or self.chain_failures
            or self.unknown_sessions
            or self.replay_mismatches
            or self.problems
        )


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


async def public_keys(base_url: str) -> dict[str, Ed25519PublicKey]:
    """`GET /v1/keys`; each key's id checked against its public key (§4)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        resp = await client.get("/v1/keys")
        resp.raise_for_status()
    keys = {}
    for k in resp.json()["keys"]:
        raw = bytes.fromhex(k["public_key"])
        if hashlib.sha256(raw).hexdigest()[:16] != k["key_id"] or k["alg"] != "Ed25519":
            raise ValueError(f"key {k} does not match its id")
        keys[k["key_id"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def verify_chain(
    session_id: str, stored: Stored, keys: dict[str, Ed25519PublicKey]
) -> Iterator[str]:
    """PROTOCOL §6 (and §7's exact bytes) over one session's stored records."""
    prev_event = ZERO
    prev_seal = ZERO
    next_seq = 0
    covered = 0  # events 0..covered-1 are covered by a seal
    last_was_seal = False
    for seq, is_seal, hash_col, raw in stored.records:
        record = json.loads(raw)
        where = f"session {session_id} seq {seq}{' seal' if is_seal else ''}"
        if rfc8785.dumps(record) != raw:
            yield f"{where}: stored bytes are not the JCS of the record"
        if record.get("hash") != hash_col or record_hash(record) != hash_col:
            yield f"{where}: hash does not recompute"
        if record.get("session_id") != session_id or record.get("seq") != seq:
            yield f"{where}: session_id/seq differ from the row"
        if not is_seal:
            members = {"session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"}
            if set(record) != members or record["kind"].startswith("CHAIN_"):
                yield f"{where}: not an event"
            if seq != next_seq:
                yield f"{where}: expected event seq {next_seq}"
            if record["prev_hash"] != prev_event:
                yield f"{where}: prev_hash does not link"
            prev_event = hash_col
            next_seq = seq + 1
            last_was_seal = False
            continue
        payload = record.get("payload", {})
        if record.get("kind") != "CHAIN_SEAL" or set(payload) != {
            "first_seq",
            "prev_seal",
            "key_id",
        }:
            yield f"{where}: not a seal"
            continue
        if seq != next_seq - 1 or record["prev_hash"] != prev_event:
            yield f"{where}: not pinned to the event at its seq"
        if payload["prev_seal"] != prev_seal:
            yield f"{where}: prev_seal does not link"
        if payload["first_seq"] != covered:
            yield f"{where}: covers from {payload['first_seq']}, expected {covered}"
        key = keys.get(payload["key_id"])
        if key is None:
            yield f"{where}: unknown key {payload['key_id']}"
        else:
            try:
                key.verify(bytes.fromhex(record["signature"]), bytes.fromhex(hash_col))
            except (InvalidSignature, ValueError):
                yield f"{where}: signature does not verify"
        prev_seal = hash_col
        covered = seq + 1
        last_was_seal = True
    if stored.records and (covered != next_seq or not last_was_seal):
        yield f"session {session_id}: events {covered}..{next_seq - 1} not covered by a seal"
    head = stored.head
    if head is None:
        if stored.records:
            yield f"session {session_id}: records but no head row"
        return
    want = (next_seq, prev_event if next_seq else ZERO, prev_seal)
    got = (head["next_seq"], head["head_hash"], head["last_seal_hash"])
    if got != want:
        yield f"session {session_id}: head row {got} != records {want}"


def compare(log: SessionLog, stored: Stored, found: Findings) -> None:
    """The session as sent and acknowledged against the session as stored."""
    sid = log.session_id
    events = {seq: h for seq, is_seal, h, _ in stored.records if not is_seal}
    seals = {
        seq: ((json.loads(raw).get("payload") or {}).get("first_seq"), h)
        for seq, is_seal, h, raw in stored.records
        if is_seal
    }
    n = len(events)
    for seq, h in events.items():
        if seq >= log.events_sent or log.event_hash(seq) != h:
            found.problem(f"session {sid} seq {seq}: stored event was never sent")
    ranges = {(b.first, b.last) for b in log.batches}
    for seal_seq, (first_seq, _) in seals.items():
        if (first_seq, seal_seq) not in ranges:
            found.partial_batches += 1
            found.problem(f"session {sid}: a seal covers {first_seq}..{seal_seq}, not one batch")
    for b in log.batches:
        found.batches_sent += 1
        present = [
            seq in events and events[seq] == log.event_hash(seq)
            for seq in range(b.first, b.last + 1)
        ]
        whole = all(present) and seals.get(b.last, (None, ""))[0] == b.first
        if any(present) and not whole:
            found.partial_batches += 1
            found.problem(
                f"session {sid} batch {b.first}..{b.last}: partly stored "
                f"({sum(present)} of {len(present)} events, seal {seals.get(b.last)})"
            )
        if b.acked:
            found.batches_acknowledged += 1
            found.events_acknowledged += b.last - b.first + 1
            found.acknowledged_duplicate += b.duplicate
            if not whole:
                found.lost_batches += 1
                found.problem(
                    f"session {sid} batch {b.first}..{b.last}: acknowledged "
                    f"({'duplicate' if b.duplicate else 'appended'}) but not stored whole"
                )
            elif seals[b.last][1] != b.seal_hash:
                found.lost_batches += 1
                found.problem(
                    f"session {sid} batch {b.first}..{b.last}: the stored seal is not the "
                    "one its acknowledgement carried"
                )
        elif whole:
            found.unacknowledged_stored += 1
        elif not any(present):
            found.unacknowledged_absent += 1
    if n and max(events) + 1 != n:
        found.problem(f"session {sid}: events stored with a gap")


async def stored_sessions(dsn: str) -> AsyncIterator[tuple[str, Stored]]:
    """Every session's records and head row, straight from the tables, one
    session at a time (records are read through a cursor, in key order)."""
    conn = await asyncpg.connect(dsn)
    try:
        heads = {str(r["session_id"]): dict(r) for r in await conn.fetch("SELECT * FROM sessions")}
        current: tuple[str, Stored] | None = None
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            query = """SELECT session_id, seq, is_seal, hash, record FROM records
                       ORDER BY tenant_id, session_id, seq, is_seal"""
            async for row in conn.cursor(query, prefetch=5000):
                sid = str(row["session_id"])
                if current is None or current[0] != sid:
                    if current is not None:
                        yield current
                    current = (sid, Stored(head=heads.pop(sid, None)))
                current[1].records.append(
                    (row["seq"], row["is_seal"], row["hash"], bytes(row["record"]))
                )
        if current is not None:
            yield current
        for sid, head in heads.items():  # a head row without records
            yield sid, Stored(head=head)
    finally:
        await conn.close()


async def check_replay(
    base_url: str, token: str, stored: dict[str, Stored], sample: list[str], found: Findings
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for sid in sample:
            resp = await client.get(f"/v1/sessions/{sid}/records")
            found.replay_checked += 1
            want = b"".join(raw + b"\n" for *_, raw in stored[sid].records)
            if resp.status_code != 200 or resp.content != want:
                found.replay_mismatches += 1
                found.problem(f"session {sid}: replay ({resp.status_code}) differs from storage")


async def check(
    dsn: str, base_url: str, token: str, ledger: Ledger, *, replay_sample: int
) -> Findings:
    found = Findings()
    keys = await public_keys(base_url)
    sent = {log.session_id: log for log in ledger.sessions}
    step = max(1, len(ledger.sessions) // max(1, replay_sample))
    sample = {log.session_id for log in ledger.sessions[::step][:replay_sample]}
    kept: dict[str, Stored] = {}
    seen: set[str] = set()
    async for sid, s in stored_sessions(dsn):
        seen.add(sid)
        if s.records:
            found.sessions_stored += 1
        found.events_stored += sum(1 for r in s.records if not r[1])
        found.seals_stored += sum(1 for r in s.records if r[1])
        bad = list(verify_chain(sid, s, keys))
        if bad:
            found.chain_failures += 1
            for text in bad[:3]:
                found.problem(text)
        log = sent.get(sid)
        if log is None:
            found.unknown_sessions += 1
            found.problem(f"session {sid} is stored but no writer sent it")
        else:
            compare(log, s, found)
        if sid in sample and s.records:
            kept[sid] = s
    for log in ledger.sessions:
        if log.session_id not in seen:
            compare(log, Stored(), found)
    await check_replay(base_url, token, kept, sorted(kept), found)
    return found
