"""Against the real service: the nesting budget at its boundary, integers
beyond 2^53-1, continuing a session from the server's head, and a key the
server refuses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_chain import AgentChainError, AuthError, Client, InvalidEventError
from agent_chain.canonical import jcs_python
from agent_chain.records import event_line, hashed_bytes, new_session_id
from agent_chain.verifier import verify_chain

from ..support import assert_whole_batches
from .conftest import Service

TS = "2026-01-15T09:30:00.250Z"


def nested(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    return inner


def test_nesting_budget_at_the_boundary(service: Service, api_key: str, tmp_path: Path) -> None:
    with Client(service.url, api_key, journal_dir=tmp_path) as client:
        s = client.session()
        s.record("deep", nested(61))  # body 1 > events 2 > event 3 > payload 4..64
        s.record("deep", {"list": [[[]]], "obj": nested(58)})
        with pytest.raises(InvalidEventError) as caught:
            s.record("deep", nested(62))
        assert caught.value.rule == "depth"
        assert client.flush(timeout=30).complete
    assert service.stored(s.session_id).event_count == 2
    # The server refuses the next level too, when a client sends it anyway.
    sid = new_session_id()
    hashed = hashed_bytes(sid, 0, "deep", TS, jcs_python(nested(62)), "0" * 64)
    body = b'{"events":[' + event_line(hashed, hashlib.sha256(hashed).hexdigest()) + b"]}"
    resp = httpx.post(
        f"{service.url}/v1/ingest",
        content=body,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["code"] == "json_rule", resp.text


def test_integers_beyond_2_53_round_trip(service: Service, api_key: str, tmp_path: Path) -> None:
    with Client(service.url, api_key, journal_dir=tmp_path) as client:
        s = client.session()
        _, digest = s.record("ids", {"span": 374956584419848800, "max": 2**53 - 1})
        with pytest.raises(InvalidEventError):
            s.record("ids", {"span": 9007199254740993})
        assert client.flush(timeout=30).complete
    lines = service.replay(api_key, s.session_id)
    assert b'"span":374956584419848800' in lines[0]
    assert json.loads(lines[0])["hash"] == digest


def test_continue_a_session_from_the_servers_head(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    with Client(service.url, api_key, journal_dir=tmp_path / "a") as first:
        with first.session() as s:
            sid = s.session_id
            for i in range(5):
                s.record("step", {"i": i})
        assert first.flush(timeout=30).complete
    errors: list[AgentChainError] = []
    with Client(service.url, api_key, journal_dir=tmp_path / "b", on_error=errors.append) as b:
        with b.session(sid) as s2:
            start = s2.receipt()
            assert start is not None and start.seq == 4  # the server's last seal, verified
            assert s2.record("step", {"i": 5})[0] == 5
            assert s2.record("step", {"i": 6})[0] == 6
        assert b.flush(timeout=30).complete
        end = s2.receipt()
        assert end is not None and (end.first_seq, end.seq, end.prev_seal) == (5, 6, start.hash)
    assert errors == []
    stored = service.stored(sid)
    assert_whole_batches(stored)
    assert stored.event_count == 7
    assert verify_chain(service.replay(api_key, sid), service.public_keys()).ok


def test_continuing_needs_the_read_scope(service: Service, api_key: str, tmp_path: Path) -> None:
    ingest_only = service.key("ingest")
    with Client(service.url, api_key, journal_dir=tmp_path / "a") as first:
        with first.session() as s:
            s.record("step", {})
        assert first.flush(timeout=30).complete
    other = Client(service.url, ingest_only, journal_dir=tmp_path / "b")
    with other, pytest.raises(AuthError, match="read"):
        other.session(s.session_id)


def test_a_refused_key_keeps_journaling_and_reports(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    errors: list[AgentChainError] = []
    bad = "csk_0123456789abcdef_" + "x" * 43
    with Client(
        service.url, bad, journal_dir=tmp_path, on_error=errors.append, backoff_max=0.2
    ) as client:
        s = client.session()
        for i in range(3):
            s.record("step", {"i": i})
        report = client.flush(timeout=0.5)
        assert not report.complete and report.pending == 3
        assert isinstance(report.last_error, AuthError) and report.last_error.status == 401
        s.record("step", {"i": 3})  # still journaling
        assert client.status().sessions[0].state == "open"
        client.close(timeout=0)  # what is not acknowledged stays in the journal
    # The next client, with a good key, sends what was journaled.
    with Client(service.url, api_key, journal_dir=tmp_path) as good:
        assert good.flush(timeout=30).complete
    assert service.stored(s.session_id).event_count == 4
