"""`record` and the journal, with no server reachable: refusals at the call
site, masks, the size cap, the lock, resuming a journal (torn last line cut,
corruption refused)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_chain import (
    AgentChainError,
    Client,
    InvalidEventError,
    JournalCorruptError,
    JournalFullError,
    JournalLockedError,
    SessionClosedError,
)
from agent_chain.audit import verify_journal
from agent_chain.journal import default_journal_dir, user_data_dir
from agent_chain.records import parse_event_line

from ..conftest import free_port

KEY = "csk_0123456789abcdef_" + "x" * 43


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Client]:
    """A client whose server does not answer (nothing listens on its port)."""
    errors: list[AgentChainError] = []
    client = Client(
        f"http://127.0.0.1:{free_port()}",
        KEY,
        journal_dir=tmp_path / "journal",
        on_error=errors.append,
        backoff_max=0.2,
    )
    try:
        yield client
    finally:
        client.close(timeout=0)


def events_file(client: Client, sid: str) -> Path:
    return client.config.journal_dir / f"{sid}.events.ndjson"


def test_record_returns_seq_and_hash_and_journals_the_replay_line(offline: Client) -> None:
    s = offline.session()
    first = s.record("llm.start", {"model": "m", "n": 374956584419848800})
    second = s.record("llm.end", {"text": "Zürich"})
    assert (first[0], second[0]) == (0, 1)
    lines = events_file(offline, s.session_id).read_bytes().splitlines()
    assert [parse_event_line(ln).hash for ln in lines] == [first[1], second[1]]
    assert parse_event_line(lines[1]).prev_hash == first[1]
    assert b'"n":374956584419848800' in lines[0]


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("", "kind"),
        ("a" * 129, "kind"),
        ("tool call", "kind"),
        ("tool\n", "kind"),
        ("é", "kind"),
        ("CHAIN_SEAL", "reserved_kind"),
        ("CHAIN_anything", "reserved_kind"),
    ],
)
def test_bad_kinds_are_refused(offline: Client, kind: str, rule: str) -> None:
    s = offline.session()
    with pytest.raises(InvalidEventError) as caught:
        s.record(kind, {})
    assert caught.value.rule == rule
    s.record("a" * 128, {})
    s.record("A-Za-z0-9_.:/-", {})
    assert s.next_seq == 2  # nothing was recorded for the refusals


def test_the_size_cap(tmp_path: Path) -> None:
    with Client(
        f"http://127.0.0.1:{free_port()}", KEY, journal_dir=tmp_path, max_event_bytes=1000
    ) as client:
        s = client.session()
        s.record("k", {"x": "y" * 700})
        with pytest.raises(InvalidEventError) as caught:
            s.record("k", {"x": "y" * 1000})
        assert caught.value.rule == "too_large"
        assert s.next_seq == 1
        client.close(timeout=0)


def test_mask_runs_before_hashing_and_a_failing_mask_leaves_no_gap(tmp_path: Path) -> None:
    errors: list[AgentChainError] = []

    def mask(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        if kind == "boom":
            raise RuntimeError("secret-in-message")
        return {k: ("***" if k == "password" else v) for k, v in payload.items()}

    with Client(
        f"http://127.0.0.1:{free_port()}",
        KEY,
        journal_dir=tmp_path,
        mask=mask,
        on_error=errors.append,
    ) as client:
        s = client.session()
        s.record("login", {"user": "ann", "password": "hunter2"})
        s.record("boom", {"password": "hunter2"})
        s.record("after", {})
        text = events_file(client, s.session_id).read_text()
        client.close(timeout=0)
    assert "hunter2" not in text and "secret-in-message" not in text
    records = [json.loads(ln) for ln in text.splitlines()]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["payload"] == {"user": "ann", "password": "***"}
    assert records[1]["payload"]["agent_chain.mask_error"] == "RuntimeError"
    assert any(isinstance(e, InvalidEventError) and e.rule == "mask" for e in errors)


def test_the_cap_on_unacknowledged_bytes_raises_and_never_drops(tmp_path: Path) -> None:
    with Client(
        f"http://127.0.0.1:{free_port()}",
        KEY,
        journal_dir=tmp_path,
        max_pending_bytes=4000,
        full_timeout=0.05,
        backoff_max=0.2,
    ) as client:
        s = client.session()
        recorded = 0
        refused: JournalFullError | None = None
        for i in range(100):
            try:
                s.record("k", {"i": i, "pad": "p" * 200})
            except JournalFullError as exc:
                refused = exc
                break
            recorded += 1
        assert refused is not None and "NOT recorded" in str(refused)
        assert 0 < recorded < 100
        assert s.next_seq == recorded
        assert len(events_file(client, s.session_id).read_bytes().splitlines()) == recorded
        client.close(timeout=0)


def test_one_writer_per_session(offline: Client, tmp_path: Path) -> None:
    s = offline.session()
    s.record("k", {})
    with pytest.raises(JournalLockedError):
        offline.session(s.session_id)
    other = Client(
        offline.config.base_url, KEY, journal_dir=offline.config.journal_dir, resume=False
    )
    try:
        with pytest.raises(JournalLockedError):
            other.session(s.session_id)
    finally:
        other.close(timeout=0)


def test_closed_session_refuses_records(offline: Client) -> None:
    with offline.session() as s:
        s.record("k", {})
    with pytest.raises(SessionClosedError):
        s.record("k", {})


def test_resume_cuts_a_torn_last_line_and_continues_the_chain(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    first = Client(url, KEY, journal_dir=tmp_path, resume=False)
    s = first.session()
    hashes = [s.record("k", {"i": i})[1] for i in range(5)]
    sid = s.session_id
    first.close(timeout=0)
    path = tmp_path / f"{sid}.events.ndjson"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"hash":"00ab')  # a write cut by a crash
    again = Client(url, KEY, journal_dir=tmp_path, resume=False)
    try:
        s2 = again.session(sid)
        assert path.read_bytes() == whole
        seq, _ = s2.record("k", {"i": 5})
        assert seq == 5
        assert parse_event_line(path.read_bytes().splitlines()[5]).prev_hash == hashes[4]
        status = again.status()
        assert status.sessions[0].pending_events == 6
    finally:
        again.close(timeout=0)
    report = verify_journal(path)
    assert report.ok and report.unsealed == 6


def test_a_corrupt_line_that_is_not_the_last_is_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    first = Client(url, KEY, journal_dir=tmp_path, resume=False)
    s = first.session()
    for i in range(3):
        s.record("k", {"i": i})
    first.close(timeout=0)
    path = tmp_path / f"{s.session_id}.events.ndjson"
    path.write_bytes(path.read_bytes().replace(b'"i":1', b'"i":7'))
    again = Client(url, KEY, journal_dir=tmp_path, resume=False)
    try:
        with pytest.raises(JournalCorruptError, match="does not hold"):
            again.session(s.session_id)
    finally:
        again.close(timeout=0)
    report = verify_journal(path)
    assert not report.ok and report.failure is not None
    assert report.failure.reason == "hash_mismatch" and report.failure.seq == 1


def test_default_journal_folder_is_per_user_server_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/tmp/xdg-test")
    assert user_data_dir() == Path("/tmp/xdg-test/agent-chain")
    a = default_journal_dir("http://127.0.0.1:8000", KEY)
    assert a.parent == Path("/tmp/xdg-test/agent-chain/journals")
    assert "x" * 10 not in str(a)  # the secret never reaches the file system
    assert a != default_journal_dir("http://127.0.0.1:8001", KEY)
    assert a != default_journal_dir("http://127.0.0.1:8000", KEY.replace("0123", "9999"))
    assert os.fspath(a).startswith("/tmp/xdg-test")
