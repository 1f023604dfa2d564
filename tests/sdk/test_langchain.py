"""The LangChain integration: the demo agent's golden path (its events in the
database AUTHORITATIVE with CHAIN_SEAL records, replayed in order, verified
offline), the handler's event sequence (sync and async identical), JSON-safe
payloads, and failures that are reported, never silent."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_chain import AgentChainError, Client, SessionClosedError
from agent_chain.audit import verify_journal
from agent_chain.langchain import AgentChainCallbackHandler, recording
from agent_chain.verifier import verify_chain
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage

from examples.langchain_demo import run_agent, run_agent_async

from ..support import ROOT, assert_whole_batches, cli
from .conftest import Service
from .test_golden_path import run_verify

# What one run of the demo agent records, in order.
DEMO_KINDS = [
    "chain.start",
    "custom.event",
    "llm.start",
    "llm.end",
    "agent.action",
    "tool.start",
    "tool.end",
    "llm.start",
    "llm.end",
    "agent.action",
    "tool.start",
    "retriever.start",
    "retriever.end",
    "tool.end",
    "llm.start",
    "llm.end",
    "agent.finish",
    "chain.end",
]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def events_of(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in lines if b'"CHAIN_SEAL"' not in ln]


def normalized(events: list[dict[str, Any]]) -> list[Any]:
    """(kind, payload) of each event, every UUID (run ids, message ids) replaced
    by the order of its first appearance: two runs of the same agent compare equal."""
    seen: dict[str, str] = {}
    text = json.dumps([[e["kind"], e["payload"]] for e in events], sort_keys=True)
    out: list[Any] = json.loads(
        _UUID.sub(lambda m: seen.setdefault(m.group(), f"<uuid {len(seen)}>"), text)
    )
    return out


def check_run_tree(events: list[dict[str, Any]]) -> None:
    """Every payload names its run and its parent; every parent is a recorded run."""
    runs = {e["payload"]["run_id"] for e in events}
    roots = set()
    for e in events:
        p = e["payload"]
        assert {"run_id", "parent_run_id", "tags", "metadata", "name"} <= set(p), e
        uuid.UUID(p["run_id"])
        assert p["tags"] == ["demo"]
        assert isinstance(p["metadata"], dict)
        if p["parent_run_id"] is None:
            roots.add(p["run_id"])
        else:
            assert p["parent_run_id"] in runs, e
    assert len(roots) == 1


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def client(service: Service, api_key: str, journal: Path) -> Iterator[Client]:
    errors: list[AgentChainError] = []
    with Client(service.url, api_key, journal_dir=journal, on_error=errors.append) as c:
        yield c
    assert errors == []


def test_demo_golden_path(service: Service, api_key: str, tmp_path: Path) -> None:
    """The demo agent, as `make demo` runs it: its events stored AUTHORITATIVE
    with CHAIN_SEAL records, replayed in order, verified offline."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "examples.langchain_demo", "--url", service.url),
            *("--api-key", api_key, "--journal-dir", str(tmp_path / "journal")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sid = done.stdout.splitlines()[-1].removeprefix("session_id=")
    uuid.UUID(sid)

    stored = service.stored(sid)
    assert_whole_batches(stored)
    assert stored.event_count == len(DEMO_KINDS) and len(stored.seals) >= 1
    assert service.statuses(sid) == {"AUTHORITATIVE"}

    lines = service.replay(api_key, sid)
    events = events_of(lines)
    assert [e["seq"] for e in events] == list(range(len(DEMO_KINDS)))
    assert [e["kind"] for e in events] == DEMO_KINDS
    assert [e["hash"] for e in events] == [stored.events[i] for i in range(len(events))]
    check_run_tree(events)
    assert verify_chain(lines, service.public_keys(), backend="python").ok

    bundle = tmp_path / "evidence.ndjson"
    exported = cli(service.database_url, "export", sid, "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    out = run_verify(bundle)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"OK: {len(lines)} records"), out.stdout


def test_sync_and_async_runs_record_the_same_events(
    client: Client, service: Service, api_key: str
) -> None:
    with client.session() as s_sync, client.session() as s_async:
        sync_handler = AgentChainCallbackHandler(s_sync)
        async_handler = AgentChainCallbackHandler(s_async)
        answer = run_agent([sync_handler])
        assert asyncio.run(run_agent_async([async_handler])) == answer
    report = client.flush(timeout=30)
    assert report.complete, report
    assert sync_handler.failures.count == async_handler.failures.count == 0

    sync_events = events_of(service.replay(api_key, s_sync.session_id))
    async_events = events_of(service.replay(api_key, s_async.session_id))
    assert [e["kind"] for e in sync_events] == DEMO_KINDS
    assert normalized(sync_events) == normalized(async_events)
    assert service.statuses(s_sync.session_id) == {"AUTHORITATIVE"}
    check_run_tree(sync_events)

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in sync_events:
        by_kind.setdefault(e["kind"], []).append(e["payload"])
    # Tools: the model's tool_call_id on both ends; the retriever nested in its tool.
    assert [p["tool_call_id"] for p in by_kind["tool.start"]] == ["call_order_1", "call_policy_2"]
    assert [p["tool_call_id"] for p in by_kind["tool.end"]] == ["call_order_1", "call_policy_2"]
    assert [p["tool_call_id"] for p in by_kind["agent.action"]] == ["call_order_1", "call_policy_2"]
    assert by_kind["tool.start"][0]["inputs"] == {"order_id": "A-1042"}
    assert by_kind["retriever.start"][0]["parent_run_id"] == by_kind["tool.start"][1]["run_id"]
    assert by_kind["retriever.end"][0]["documents"][0]["metadata"] == {
        "source": "policies/refunds.md"
    }
    # Models: the messages in, the message out (tool calls, usage).
    first_in = by_kind["llm.start"][0]
    assert first_in["model_type"] == "chat"
    assert [m["type"] for m in first_in["messages"][0]] == ["system", "human"]
    first_out = by_kind["llm.end"][0]["generations"][0][0]["message"]
    assert first_out["tool_calls"][0]["id"] == "call_order_1"
    last_out = by_kind["llm.end"][2]["generations"][0][0]["message"]
    assert last_out["usage_metadata"]["total_tokens"] == 453
    assert by_kind["agent.finish"][0]["return_values"] == {"output": answer}
    assert by_kind["chain.end"][0]["outputs"] == answer
    assert by_kind["custom.event"][0]["event"] == "agent.plan"


def offline_client(journal: Path, **options: Any) -> Client:
    """A client whose server never answers: events stay in its journal."""

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "3600"})

    return Client(
        "http://127.0.0.1:9",
        "csk_unused",
        journal_dir=journal,
        resume=False,
        keep_journal=True,
        transport=httpx.MockTransport(unavailable),
        **options,
    )


class Weird:
    def __repr__(self) -> str:
        return "<Weird \udcff>"


def test_payloads_are_made_json_safe(tmp_path: Path) -> None:
    """Whatever a framework hands the handler, `record`'s checks pass: no
    event is refused at the call site, and none is left out."""
    deep: list[Any] = ["x"]
    for _ in range(80):
        deep = [deep]
    c = offline_client(tmp_path)
    try:
        session = c.session()
        handler = AgentChainCallbackHandler(session, raise_error=True)
        run_id, parent = uuid.uuid4(), uuid.uuid4()
        metadata: dict[Any, Any] = {
            "when": datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
            "ids": {uuid.uuid4(), uuid.uuid4()},
            1: "int key",
            (1, 2): "tuple key",
            "nan": math.nan,
            "big": 2**64 + 1,
            "double": 374956584419848800,
            "bytes": b"\x00\xff",
            "surrogate": "a\udc80b",
            "object": Weird(),
            "deep": deep,
        }
        handler.on_chat_model_start(
            {"id": ["x", "Model"]},
            [
                [
                    HumanMessage("hi"),
                    AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "c"}]),
                ]
            ],
            run_id=run_id,
            parent_run_id=parent,
            tags=["t"],
            metadata=metadata,
            invocation_params={"model": "m", "api_key": "sk-secret", "max_tokens": 5},
        )
        handler.on_custom_event("huge", {"blob": "x" * 2_000_000}, run_id=run_id)
        handler.on_tool_start({"name": "t"}, "in", run_id=uuid.uuid4(), tool_call_id="c")
        assert handler.failures.count == 0
        c.flush(timeout=0)
        lines = (tmp_path / f"{session.session_id}.events.ndjson").read_bytes().splitlines()
        events = events_of(lines)
        assert [e["kind"] for e in events] == ["llm.start", "custom.event", "tool.start"]
        p = events[0]["payload"]
        assert p["run_id"] == str(run_id) and p["parent_run_id"] == str(parent)
        md = p["metadata"]
        assert md["when"] == "2026-01-15T09:30:00+00:00"
        assert md["1"] == "int key" and md["(1, 2)"] == "tuple key"
        assert md["nan"] == "nan" and md["big"] == str(2**64 + 1)
        assert md["double"] == 374956584419848800
        assert md["bytes"] == "base64:AP8="
        assert md["surrogate"] == "a\\udc80b"
        assert md["object"] == "<Weird \\udcff>"
        assert sorted(md["ids"]) == md["ids"] and len(md["ids"]) == 2
        assert p["invocation_params"] == {"model": "m", "api_key": "[redacted]", "max_tokens": 5}
        huge = events[1]["payload"]
        assert huge["agent_chain.truncated"] is True and len(huge["data"]["blob"]) < 5000
        assert events[2]["payload"]["tool_call_id"] == "c"
        # The journal holds what the server would accept: it verifies as a chain.
        report = verify_journal(tmp_path / f"{session.session_id}.events.ndjson")
        assert report.ok and report.unsealed == 3
        assert "[['x']]" in json.dumps(md["deep"])  # cut (as its repr), not refused
    finally:
        c.close(timeout=0)


def test_recording_attaches_the_handler_to_every_run(tmp_path: Path) -> None:
    c = offline_client(tmp_path)
    try:
        session = c.session()
        with recording(session) as handler:
            run_agent([])
        run_agent([])  # outside the block: not recorded
        assert handler.failures.count == 0
        assert session.next_seq == len(DEMO_KINDS)
    finally:
        c.close(timeout=0)


def test_failures_are_reported_never_silent(tmp_path: Path) -> None:
    reported: list[AgentChainError] = []
    with offline_client(tmp_path, on_error=reported.append) as c:
        session = c.session()
        session.close()
        handler = AgentChainCallbackHandler(session)
        run_agent([handler])  # the agent's run is not disturbed...
        assert handler.failures.count == len(DEMO_KINDS)  # ...but every event is reported
        assert isinstance(handler.failures.last_error, SessionClosedError)
        assert len(reported) == len(DEMO_KINDS) and c.status().errors == len(DEMO_KINDS)

        strict = AgentChainCallbackHandler(session, raise_error=True)
        with pytest.raises(SessionClosedError):
            run_agent([strict])


def test_handler_is_inline() -> None:
    # LangChain runs non-inline sync handlers of async runs in a thread pool,
    # out of order (langchain#23909): ours must never be.
    assert AgentChainCallbackHandler.run_inline is True
    assert issubclass(AgentChainCallbackHandler, BaseCallbackHandler)
