"""Evidence bundles: `python -m service export` writes one, `python -m service
verify` checks it offline and names the first record that does not hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from agent_chain import audit, bundle

import hashcore
from service.cli import ProgressPrinter
from service.storage.database import Connection, Database

from .chain import ZERO, Chain, body_of
from .conftest import Server
from .support import JSON, ROOT

SEAL_TS = "2026-11-27T12:00:00.000000Z"


# ---- bundles built here, without a server ---------------------------------------


@dataclass
class Sealed:
    """A session sealed batch by batch, as the server would, with some signers."""

    signers: list[hashcore.Signer]
    chain: Chain = field(default_factory=Chain)
    records: list[bytes] = field(default_factory=list)
    events: int = 0
    seals: int = 0
    prev_seal: str = ZERO

    def add(self, size: int, signer: int = 0) -> None:
        batch = hashcore.verify_batch(body_of(self.chain.make(size)), 1000)
        seal = self.signers[signer].seal(
            batch.session_id,
            batch.last_seq,
            batch.first_seq,
            self.prev_seal,
            batch.last_hash,
            SEAL_TS,
        )
        self.prev_seal = seal.hash
        self.records += [*batch.records, seal.record]
        self.events += size
        self.seals += 1

    def header(self, **changes: Any) -> bundle.BundleHeader:
        fields: dict[str, Any] = {
            "session_id": self.chain.session_id,
            "tenant": "acme",
            "exported_at": "2026-11-27T13:00:00.000000Z",
            "keys": tuple(bundle.BundleKey(s.key_id, s.public_key) for s in self.signers),
            "events": self.events,
            "seals": self.seals,
            "head_hash": self.chain.events[-1]["hash"],
            **changes,
        }
        return bundle.BundleHeader(**fields)

    def write(self, path: Path, records: list[bytes] | None = None, **changes: Any) -> Path:
        with path.open("wb") as out:
            bundle.BundleWriter(out, self.header(**changes)).write(
                self.records if records is None else records
            )
        return path


def signer(n: int) -> hashcore.Signer:
    return hashcore.Signer(bytes([n]) * 32)


@pytest.fixture
def sealed() -> Sealed:
    """Three batches: lines 2-5 events 0-3, 6 seal 3, 7 event 4, 8 seal 4, 9-11
    events 5-7, 12 seal 7 (line 1 is the header)."""
    s = Sealed([signer(1)])
    for size in (4, 1, 3):
        s.add(size)
    return s


def failure_of(report: audit.BundleReport) -> audit.Failure:
    assert not report.ok
    assert report.failure is not None
    return report.failure


def test_a_sound_bundle_verifies_and_says_what_it_checked(sealed: Sealed, tmp_path: Path) -> None:
    report = audit.verify_bundle(sealed.write(tmp_path / "b.ndjson"))
    assert report.ok
    assert (report.records, report.events, report.seals) == (11, 8, 3)
    assert report.keys_used == [sealed.signers[0].key_id]
    assert report.text() == (
        f"OK: 11 records (8 events, 3 seals) verified; session {sealed.chain.session_id} "
        f"(tenant acme); keys used: {sealed.signers[0].key_id}"
    )


def test_a_changed_byte_is_named_with_what_was_expected_and_found(
    sealed: Sealed, tmp_path: Path
) -> None:
    records = list(sealed.records)
    records[5] = records[5].replace(b"question 4", b"question 5")  # event 4, line 7
    report = audit.verify_bundle(sealed.write(tmp_path / "b.ndjson", records))
    failure = failure_of(report)
    assert (failure.line, failure.seq, failure.kind) == (7, 4, "llm.call")
    assert failure.reason == "hash_mismatch"
    assert failure.found == sealed.chain.events[4]["hash"]
    assert failure.expected is not None
    assert failure.expected != failure.found
    assert failure.record == records[5].decode()
    text = report.text()
    assert text.startswith("FAILED at line 7 (seq 4, llm.call): hash_mismatch — ")
    assert f"expected: {failure.expected}" in text
    assert f"found:    {failure.found}" in text
    assert "question 5" in text


@pytest.mark.parametrize(
    ("mutation", "line", "seq", "kind", "reason"),
    [
        # Event 2 (line 4) removed: line 4 now holds event 3.
        ("remove_event", 4, 3, "llm.call", "seq_gap"),
        # Events 1 and 2 (lines 3, 4) swapped.
        ("swap_events", 3, 2, "llm.call", "seq_gap"),
        # Seal 4 (line 8) removed: seal 7 (now line 11) covers from seq 5 only.
        ("remove_seal", 11, 7, "CHAIN_SEAL", "seal_coverage"),
        # Seal 3 (line 6) moved after event 4 (line 7): a seal behind the head.
        ("swap_event_and_seal", 7, 3, "CHAIN_SEAL", None),
        ("alter_signature", 8, 4, "CHAIN_SEAL", "bad_signature"),
        ("remove_last_seal", 11, 7, "llm.call", "last_not_seal"),
        ("blank_line", 5, None, None, "malformed_json"),
    ],
)
def test_each_altered_bundle_is_caught_at_the_record_at_fault(
    sealed: Sealed,
    tmp_path: Path,
    mutation: str,
    line: int,
    seq: int | None,
    kind: str | None,
    reason: str | None,
) -> None:
    r = list(sealed.records)
    match mutation:
        case "remove_event":
            del r[2]
        case "swap_events":
            r[1], r[2] = r[2], r[1]
        case "remove_seal":
            del r[6]
        case "swap_event_and_seal":
            r[4], r[5] = r[5], r[4]
        case "alter_signature":
            seal = json.loads(r[6])
            seal["signature"] = seal["signature"][:-1] + (
                "1" if seal["signature"][-1] == "0" else "0"
            )
            r[6] = json.dumps(seal, separators=(",", ":"), sort_keys=True).encode()
        case "remove_last_seal":
            del r[-1]
        case "blank_line":
            r.insert(3, b"")
    report = audit.verify_bundle(sealed.write(tmp_path / "b.ndjson", r))
    failure = failure_of(report)
    assert (failure.line, failure.seq, failure.kind) == (line, seq, kind)
    if reason is not None:
        assert failure.reason == reason
    assert report.text().startswith(f"FAILED at line {line}")


def test_a_missing_key_is_named_at_the_first_seal_it_signed(tmp_path: Path) -> None:
    # A key rotation: the first two seals by one key, the last by another.
    s = Sealed([signer(1), signer(2)])
    s.add(2, signer=0)
    s.add(2, signer=0)
    s.add(2, signer=1)
    assert audit.verify_bundle(s.write(tmp_path / "both.ndjson")).keys_used == sorted(
        [s.signers[0].key_id, s.signers[1].key_id]
    )

    only_first = (bundle.BundleKey(s.signers[0].key_id, s.signers[0].public_key),)
    report = audit.verify_bundle(s.write(tmp_path / "one.ndjson", keys=only_first))
    failure = failure_of(report)
    # Lines: 2-3 events, 4 seal, 5-6 events, 7 seal, 8-9 events, 10 seal by key 2.
    assert (failure.line, failure.seq, failure.kind) == (10, 5, "CHAIN_SEAL")
    assert failure.reason == "unknown_key"
    assert failure.found == s.signers[1].key_id


def test_a_bundle_cut_short_at_a_seal_is_caught_by_its_header(
    sealed: Sealed, tmp_path: Path
) -> None:
    # Without its last batch the records still form a valid chain.
    report = audit.verify_bundle(sealed.write(tmp_path / "b.ndjson", sealed.records[:7]))
    failure = failure_of(report)
    assert (failure.line, failure.reason) == (0, "count_mismatch")
    assert (failure.expected, failure.found) == ("8 events, 3 seals", "5 events, 2 seals")
    assert report.text().startswith("FAILED at the bundle as a whole: count_mismatch")

    # With the counts edited to match, the head announced gives it away.
    short = sealed.write(tmp_path / "c.ndjson", sealed.records[:7], events=5, seals=2)
    failure = failure_of(audit.verify_bundle(short))
    assert (failure.reason, failure.found) == ("head_mismatch", sealed.chain.events[4]["hash"])


def test_headers_that_do_not_fit_the_records_or_the_format(sealed: Sealed, tmp_path: Path) -> None:
    other = Chain().session_id
    failure = failure_of(audit.verify_bundle(sealed.write(tmp_path / "a.ndjson", session_id=other)))
    assert (failure.line, failure.reason) == (2, "session_mismatch")
    assert (failure.expected, failure.found) == (other, sealed.chain.session_id)

    wrong_id = (bundle.BundleKey("0123456789abcdef", sealed.signers[0].public_key),)
    failure = failure_of(audit.verify_bundle(sealed.write(tmp_path / "b.ndjson", keys=wrong_id)))
    assert (failure.line, failure.reason) == (1, "bad_header")
    assert "0123456789abcdef" in failure.detail

    body = b"".join(line + b"\n" for line in sealed.records)
    for name, first_line in (
        ("c", b"not json\n"),
        ("d", b'{"format": "something-else/1"}\n'),
        ("e", b'{"format": "agent-chain-evidence/1", "session_id": 5}\n'),
    ):
        path = tmp_path / f"{name}.ndjson"
        path.write_bytes(first_line + body)
        failure = failure_of(audit.verify_bundle(path))
        assert (failure.line, failure.reason) == (1, "bad_header"), name


def test_progress_is_reported_while_reading_in_small_chunks(sealed: Sealed, tmp_path: Path) -> None:
    path = sealed.write(tmp_path / "b.ndjson")
    seen: list[tuple[int, int, int]] = []
    # Chunks smaller than one record: lines span chunks and must still join up.
    report = audit.verify_bundle(path, chunk_bytes=100, progress=lambda *args: seen.append(args))
    assert report.ok
    assert len(seen) > 5
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)
    assert seen[-1] == (11, path.stat().st_size, path.stat().st_size)


def test_progress_printer_reports_at_most_once_per_interval(sealed: Sealed, tmp_path: Path) -> None:
    path = sealed.write(tmp_path / "b.ndjson")
    printed: list[str] = []
    audit.verify_bundle(
        path, chunk_bytes=1000, progress=ProgressPrinter(printed.append, "verified", 0)
    )
    assert len(printed) > 2
    assert printed[-1] == "verified 11 records (100%)"
    quiet: list[str] = []
    audit.verify_bundle(
        path, chunk_bytes=1000, progress=ProgressPrinter(quiet.append, "verified", 3600)
    )
    assert quiet == []


# ---- export and verify, end to end -----------------------------------------------


async def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def ingest(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/ingest", content=body_of(events), headers=JSON)
    assert response.status_code == 200, response.text


async def test_export_writes_the_replay_and_its_keys_and_verify_accepts_it(
    server: Server, make_key: Any, database_url: str, tmp_path: Path
) -> None:
    chain = Chain()
    async with server.client(await make_key("acme")) as client:
        for size in (5, 1, 7):
            await ingest(client, chain.make(size))
        replayed = (await client.get(f"/v1/sessions/{chain.session_id}/records")).content
    out = tmp_path / "bundle.ndjson"
    export = await cli(database_url, "export", chain.session_id, "--out", str(out))
    assert export.returncode == 0, export.stderr.decode()
    assert b"exported 16 records (13 events, 3 seals)" in export.stderr

    header_line, _, records = out.read_bytes().partition(b"\n")
    assert records == replayed
    header = json.loads(header_line)
    signer_ = server.runtime.signer
    assert header["format"] == "agent-chain-evidence/1"
    assert (header["session_id"], header["tenant"]) == (chain.session_id, "acme")
    assert header["keys"] == [
        {"key_id": signer_.key_id, "alg": "Ed25519", "public_key": signer_.public_key.hex()}
    ]
    assert (header["events"], header["seals"]) == (13, 3)
    assert header["head_hash"] == chain.events[-1]["hash"]
    assert not list(await trio.Path(tmp_path).glob("*.partial"))

    # Offline: no DATABASE_URL, no server needed.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    verify = await trio.run_process(
        [sys.executable, "-m", "service", "verify", str(out)],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout.decode()
    assert verify.stdout.decode().startswith(
        f"OK: 16 records (13 events, 3 seals) verified; session {chain.session_id} "
        f"(tenant acme); keys used: {signer_.key_id}"
    )


async def test_a_byte_tampered_in_the_database_is_named_by_verify_and_offline(
    server: Server, db: Database, make_key: Any, database_url: str, tmp_path: Path
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        for _ in range(3):
            await ingest(client, chain.make(4))

        async def tamper(conn: Connection) -> str:
            record = bytearray(
                await conn.fetchval(
                    "SELECT record FROM records WHERE session_id = $1 AND seq = 9 AND NOT is_seal",
                    chain.session_id,
                )
            )
            record[record.index(b"question 9")] = ord("Q")
            return await conn.execute(
                "UPDATE records SET record = $2 WHERE session_id = $1 AND seq = 9 AND NOT is_seal",
                chain.session_id,
                bytes(record),
            )

        assert await db.run(tamper) == "UPDATE 1"
        online = (await client.get(f"/v1/sessions/{chain.session_id}/verify")).json()

    # Events 0-3, seal, events 4-7, seal, event 8: event 9 is record 12.
    assert online["ok"] is False
    problem = online["problem"]
    assert (problem["line"], problem["seq"], problem["kind"]) == (12, 9, "llm.call")
    assert problem["reason"] == "hash_mismatch"

    out = tmp_path / "bundle.ndjson"
    assert (await cli(database_url, "export", chain.session_id, "--out", str(out))).returncode == 0
    verify = await cli(database_url, "verify", str(out))
    assert verify.returncode == 1
    text = verify.stdout.decode()
    # The bundle's line 13: its header comes first.
    assert text.startswith("FAILED at line 13 (seq 9, llm.call): hash_mismatch — "), text
    assert f"expected: {problem['expected']}" in text
    assert f"found:    {chain.events[9]['hash']}" in text
    assert "Question 9" in text


async def test_export_picks_the_tenant_when_a_session_id_is_shared(
    server: Server, make_key: Any, database_url: str, tmp_path: Path
) -> None:
    chain = Chain()
    events = chain.make(3)
    for tenant in ("acme", "globex"):
        async with server.client(await make_key(tenant)) as client:
            await ingest(client, events)
    out = tmp_path / "bundle.ndjson"

    ambiguous = await cli(database_url, "export", chain.session_id, "--out", str(out))
    assert ambiguous.returncode != 0
    assert b"acme, globex" in ambiguous.stderr
    assert b"--tenant" in ambiguous.stderr
    assert not out.exists()
    assert not list(await trio.Path(tmp_path).glob("*.partial"))

    chosen = await cli(
        database_url, "export", chain.session_id, "--tenant", "globex", "--out", str(out)
    )
    assert chosen.returncode == 0, chosen.stderr.decode()
    assert json.loads(out.read_bytes().partition(b"\n")[0])["tenant"] == "globex"
    assert (await cli(database_url, "verify", str(out))).returncode == 0

    for args in (
        [Chain().session_id],
        [chain.session_id, "--tenant", "initech"],
        ["not-a-uuid"],
    ):
        missing = await cli(database_url, "export", *args, "--out", str(tmp_path / "x.ndjson"))
        assert missing.returncode != 0, args
        assert not (tmp_path / "x.ndjson").exists()


async def test_export_of_seals_by_a_key_the_database_lost_fails_to_verify(
    server: Server, db: Database, make_key: Any, database_url: str, tmp_path: Path
) -> None:
    chain = Chain()
    async with server.client(await make_key()) as client:
        await ingest(client, chain.make(3))
    key_id = server.runtime.signer.key_id
    assert await db.run(lambda conn: conn.execute("DELETE FROM signing_keys")) == "DELETE 1"

    out = tmp_path / "bundle.ndjson"
    export = await cli(database_url, "export", chain.session_id, "--out", str(out))
    assert export.returncode == 0, export.stderr.decode()
    assert f"no public key stored for {key_id}".encode() in export.stderr
    assert json.loads(out.read_bytes().partition(b"\n")[0])["keys"] == []
    verify = await cli(database_url, "verify", str(out))
    assert verify.returncode == 1
    assert verify.stdout.decode().startswith("FAILED at line 5 (seq 2, CHAIN_SEAL): unknown_key")
