"""The golden path: events recorded through the SDK are stored AUTHORITATIVE
with CHAIN_SEAL records, replay in order, and verify offline with the client
package alone; and the rejection path: a payload altered after hashing is
refused with 400 hash_mismatch and not one row of its batch is stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import agent_chain
import httpx
import pytest
from agent_chain import AgentChainError, Client, RejectedBatchError, SessionStoppedError
from agent_chain.audit import verify_bundle, verify_journal
from agent_chain.verifier import verify_chain

from ..support import ROOT, assert_whole_batches, cli
from .conftest import Service


def run_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_chain", "verify", "--quiet", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_golden_path(service: Service, api_key: str, tmp_path: Path) -> None:
    errors: list[AgentChainError] = []
    journal = tmp_path / "journal"
    with Client(
        service.url, api_key, journal_dir=journal, on_error=errors.append, keep_journal=True
    ) as client:
        with client.session() as session:
            sid = session.session_id
            returned = [
                session.record("tool.call", {"i": i, "q": "Zürich ☃", "x": [1.5, None, True]})
                for i in range(250)
            ]
        report = client.flush(timeout=60)
        assert report.complete, report
        assert (report.sent, report.acknowledged, report.pending) == (250, 250, 0)
        receipt = session.receipt()
        assert receipt is not None and receipt.seq == 249
    assert errors == []
    assert [seq for seq, _ in returned] == list(range(250))

    # The database: every event AUTHORITATIVE, whole batches each with its seal.
    stored = service.stored(sid)
    assert_whole_batches(stored)
    assert stored.events == {seq: h for seq, h in returned}
    assert len(stored.seals) >= 3  # batches of at most 100 events
    statuses = service.statuses(sid)
    assert statuses == {"AUTHORITATIVE"}

    # Replay: in order, an event before its seal, the same bytes as the journal.
    lines = service.replay(api_key, sid)
    events = [json.loads(ln) for ln in lines if b'"CHAIN_SEAL"' not in ln]
    assert [e["seq"] for e in events] == list(range(250))
    assert [e["hash"] for e in events] == [h for _, h in returned]
    journal_lines = (journal / f"{sid}.events.ndjson").read_bytes().splitlines()
    assert journal_lines == [ln for ln in lines if b'"CHAIN_SEAL"' not in ln]
    assert (journal / f"{sid}.seals.ndjson").read_bytes().splitlines() == [
        ln for ln in lines if b'"CHAIN_SEAL"' in ln
    ]

    # Offline: the replay, the journal and the exported bundle all verify.
    for backend in ("python", "auto"):
        assert verify_chain(lines, service.public_keys(), backend=backend).ok
        assert verify_journal(journal / f"{sid}.events.ndjson", backend=backend).exit_code == 0
    bundle = tmp_path / "evidence.ndjson"
    done = cli(service.database_url, "export", sid, "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    assert verify_bundle(bundle, backend="python").ok
    for path in (bundle, journal / f"{sid}.events.ndjson"):
        out = run_verify(path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith("OK: 253 records"), out.stdout


class AlterAfterHashing(httpx.BaseTransport):
    """A transport test hook: changes one payload of the first ingest body
    after the SDK hashed it, as a corrupting proxy would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.altered = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/ingest" and not self.altered:
            body = request.read().replace(b'"payload":{"i":3}', b'"payload":{"i":4}', 1)
            assert body != request.content
            self.altered = True
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_rejection_alters_one_payload(service: Service, api_key: str, tmp_path: Path) -> None:
    errors: list[AgentChainError] = []
    transport = AlterAfterHashing()
    with Client(
        service.url,
        api_key,
        journal_dir=tmp_path / "journal",
        on_error=errors.append,
        transport=transport,
    ) as client:
        session = client.session()
        for i in range(10):
            session.record("tool.call", {"i": i})
        report = client.flush(timeout=30)
        assert not report.complete and report.pending == 10
        assert report.stopped_sessions == (session.session_id,)
        assert isinstance(report.last_error, RejectedBatchError)
        assert report.last_error.status == 400
        assert report.last_error.code == "hash_mismatch"
        assert [type(e) for e in errors] == [RejectedBatchError]
        status = client.status()
        assert status.sessions[0].state == "stopped"
        with pytest.raises(SessionStoppedError) as stopped:
            session.record("tool.call", {"i": 10})
        assert stopped.value.reason is report.last_error
    # Not one row of that batch.
    stored = service.stored(session.session_id)
    assert stored.events == {} and stored.seals == [] and stored.head is None
    # The journal is kept, intact: the events verify as an unsealed chain.
    kept = verify_journal(tmp_path / "journal" / f"{session.session_id}.events.ndjson")
    assert kept.ok and kept.unsealed == 10
    assert agent_chain.BACKEND in ("python", "hashcore")
