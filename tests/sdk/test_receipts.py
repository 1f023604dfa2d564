"""Every seal is verified before its events count as acknowledged: a forged
or mismatched seal (altered bytes, wrong key, a seal that does not pin our
chain) is an error, never an acknowledgement."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_chain import AgentChainError, Client, SealVerificationError

import hashcore

from ..chain import ZERO
from .conftest import Service

SealEdit = Callable[[dict[str, Any]], dict[str, Any]]


class TamperSeal(httpx.BaseTransport):
    """The real server behind a transport that edits the seal of every
    ingest answer after the first `honest` ones."""

    def __init__(self, edit: SealEdit, honest: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit = edit
        self.honest = honest

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.url.path != "/v1/ingest":
            return resp
        resp.read()
        if resp.status_code != 200 or self.honest > 0:
            self.honest -= 1
            return resp
        body = json.loads(resp.content)
        body["seal"] = self.edit(body["seal"])
        return httpx.Response(200, json=body)

    def close(self) -> None:
        self.inner.close()


def resign(signer: hashcore.Signer, key_id: str | None = None) -> SealEdit:
    """A seal signed by `signer` (hash recomputed), naming `key_id` or its own."""

    def edit(seal: dict[str, Any]) -> dict[str, Any]:
        forged = signer.seal(
            seal["session_id"],
            seal["seq"],
            seal["payload"]["first_seq"],
            seal["payload"]["prev_seal"],
            seal["prev_hash"],
            seal["ts"],
        )
        out: dict[str, Any] = json.loads(forged.record)
        if key_id is not None:
            out["payload"]["key_id"] = key_id  # the signature then no longer matches
        return out

    return edit


def altered_ts(seal: dict[str, Any]) -> dict[str, Any]:
    return {**seal, "ts": seal["ts"].replace("Z", "1Z")}


def altered_first_seq(seal: dict[str, Any]) -> dict[str, Any]:
    return {**seal, "payload": {**seal["payload"], "first_seq": seal["payload"]["first_seq"] + 1}}


OTHER = hashcore.Signer(bytes(range(1, 33)))


def run_forged(service: Service, key: str, tmp_path: Path, transport: httpx.BaseTransport) -> None:
    errors: list[AgentChainError] = []
    with Client(
        service.url,
        key,
        journal_dir=tmp_path,
        on_error=errors.append,
        transport=transport,
        max_batch_events=5,
    ) as client:
        session = client.session()
        for i in range(12):
            session.record("k", {"i": i})
        report = client.flush(timeout=30)
        assert not report.complete
        assert isinstance(report.last_error, SealVerificationError), report
        assert [type(e) for e in errors] == [SealVerificationError]
        status = client.status().sessions[0]
        assert status.state == "stopped"
        receipt = session.receipt()
        # Only the honest first batch (if any) was acknowledged.
        assert status.acknowledged_seq == (-1 if receipt is None else receipt.seq)
        assert report.acknowledged == status.acknowledged_seq + 1
    # The server stored the batch: only our verdict on its receipt failed.
    assert service.stored(session.session_id).event_count >= 5


@pytest.mark.parametrize(
    ("forgery", "honest"),
    [
        ("altered bytes", 0),  # the hash no longer recomputes
        ("altered first_seq", 1),
        ("unlisted key", 0),  # signed by a key GET /v1/keys does not list
        ("wrong key", 1),  # the server's key_id, another key's signature
    ],
)
def test_a_forged_seal_is_caught(
    service: Service, api_key: str, tmp_path: Path, forgery: str, honest: int
) -> None:
    edit: SealEdit = {
        "altered bytes": altered_ts,
        "altered first_seq": altered_first_seq,
        "unlisted key": resign(OTHER),
        "wrong key": resign(OTHER, key_id=next(iter(service.public_keys()))),
    }[forgery]
    run_forged(service, api_key, tmp_path, TamperSeal(edit, honest))


class FakeServer:
    """An ingest endpoint that seals with keys the test controls, and can lie."""

    def __init__(self) -> None:
        self.signer = hashcore.Signer(bytes(range(32)))
        self.listed = [self.signer]
        self.prev_seal = ZERO
        self.lie: SealEdit | None = None
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/keys":
            keys = [
                {"key_id": s.key_id, "alg": "Ed25519", "public_key": s.public_key.hex()}
                for s in self.listed
            ]
            return httpx.Response(200, json={"keys": keys})
        self.requests += 1
        batch = hashcore.verify_batch(request.read(), 1000)
        seal = self.signer.seal(
            batch.session_id,
            batch.last_seq,
            batch.first_seq,
            self.prev_seal,
            batch.last_hash,
            "2026-01-01T00:00:00.000001Z",
        )
        record: dict[str, Any] = json.loads(seal.record)
        if self.lie is not None:
            record = self.lie(record)
        else:
            self.prev_seal = seal.hash
        return httpx.Response(
            200,
            json={
                "session_id": batch.session_id,
                "accepted": batch.count,
                "duplicates": 0,
                "duplicate": False,
                "head": {"seq": batch.last_seq, "hash": batch.last_hash},
                "seal": record,
            },
        )


def signed_by(signer: hashcore.Signer, **changes: Any) -> SealEdit:
    """A lie: a validly signed seal with other members than the honest one."""

    def lie(seal: dict[str, Any]) -> dict[str, Any]:
        args = {
            "session_id": seal["session_id"],
            "seq": seal["seq"],
            "first_seq": seal["payload"]["first_seq"],
            "prev_seal": seal["payload"]["prev_seal"],
            "head_hash": seal["prev_hash"],
            "ts": seal["ts"],
        }
        args.update(changes)
        out: dict[str, Any] = json.loads(signer.seal(**args).record)
        return out

    return lie


def fake_client(fake: FakeServer, tmp_path: Path, errors: list[AgentChainError]) -> Client:
    return Client(
        "http://fake.invalid",
        "csk_0123456789abcdef_" + "x" * 43,
        journal_dir=tmp_path,
        transport=httpx.MockTransport(fake),
        on_error=errors.append,
        keep_journal=True,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"head_hash": "ab" * 32},  # prev_hash is not our event's hash
        {"first_seq": 0},  # does not start right after our last seal
        {"prev_seal": "cd" * 32},  # does not link our last seal
        {"seq": 9},  # does not end at the batch's last event
    ],
)
def test_a_validly_signed_seal_that_does_not_pin_our_chain(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    fake = FakeServer()
    errors: list[AgentChainError] = []
    with fake_client(fake, tmp_path, errors) as client:
        session = client.session()
        for i in range(3):
            session.record("k", {"i": i})
        assert client.flush(timeout=10).complete
        first = session.receipt()
        assert first is not None and first.seq == 2
        fake.lie = signed_by(fake.signer, **changes)
        for i in range(3, 6):
            session.record("k", {"i": i})
        report = client.flush(timeout=10)
        assert not report.complete and report.pending == 3
        assert isinstance(report.last_error, SealVerificationError)
        assert session.receipt() == first  # no acknowledgement from a lie
        client.close(timeout=0)


def test_key_rotation_refreshes_the_keys(tmp_path: Path) -> None:
    fake = FakeServer()
    errors: list[AgentChainError] = []
    with fake_client(fake, tmp_path, errors) as client:
        session = client.session()
        session.record("k", {})
        assert client.flush(timeout=10).complete
        new = hashcore.Signer(bytes(range(2, 34)))
        fake.signer = new
        fake.listed.append(new)  # the old key stays listed
        session.record("k", {})
        assert client.flush(timeout=10).complete
        receipt = session.receipt()
        assert receipt is not None and receipt.key_id == new.key_id
    assert errors == []
    keys = json.loads((tmp_path / f"{session.session_id}.keys.json").read_text())["keys"]
    assert {k["key_id"] for k in keys} == {fake.listed[0].key_id, new.key_id}
