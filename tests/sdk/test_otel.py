"""The OpenTelemetry integration: GenAI spans become events (ids as hex, times
as RFC 3339), message content only on request, `on_end` never waits (a full
journal is counted and reported), and the SDK's own HTTP makes no spans."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_chain import AgentChainError, Client, JournalFullError
from agent_chain.otel import AgentChainSpanProcessor, rfc3339_ns
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .conftest import Service
from .test_langchain import events_of

RFC3339_NS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
MESSAGES = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "my IBAN is …"}]}])


@pytest.fixture
def client(service: Service, api_key: str, tmp_path: Path) -> Iterator[Client]:
    errors: list[AgentChainError] = []
    with Client(service.url, api_key, journal_dir=tmp_path, on_error=errors.append) as c:
        yield c
    assert errors == []


def agent_run(provider: TracerProvider) -> dict[str, ReadableSpan]:
    """An instrumented agent run: spans as GenAI instrumentations make them."""
    tracer = provider.get_tracer("test.genai", "1.2.3")
    with tracer.start_as_current_span(
        "invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent"}
    ) as agent:
        agent.set_attribute("gen_ai.agent.name", "support")
        with tracer.start_as_current_span("chat gpt-x", kind=trace.SpanKind.CLIENT) as chat:
            chat.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-x",
                    "gen_ai.usage.input_tokens": 412,
                    "gen_ai.usage.output_tokens": 41,
                    "gen_ai.input.messages": MESSAGES,
                    "gen_ai.output.messages": MESSAGES,
                    "gen_ai.prompt.0.content": "legacy content",
                    "gen_ai.response.finish_reasons": ("tool_calls",),
                    "app.request_number": 2**62,  # beyond 2^53: a string
                }
            )
            chat.add_event("gen_ai.user.message", {"content": "my IBAN is …", "role": "user"})
        with tracer.start_as_current_span("execute_tool get_order") as tool:
            tool.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "get_order",
                    "gen_ai.tool.call.id": "call_1",
                    "gen_ai.tool.call.arguments": '{"order_id": "A-1042"}',
                }
            )
            tool.set_status(trace.StatusCode.ERROR, "order service down")
        with tracer.start_as_current_span("llm", attributes={"openinference.span.kind": "LLM"}):
            pass
        with tracer.start_as_current_span("http GET /orders"):  # not GenAI: not recorded
            pass
    return {"agent": readable(agent), "chat": readable(chat), "tool": readable(tool)}


def readable(span: trace.Span) -> ReadableSpan:
    assert isinstance(span, ReadableSpan)
    return span


def test_genai_spans_become_events(client: Client, service: Service, api_key: str) -> None:
    provider = TracerProvider()
    with client.session() as session:
        processor = AgentChainSpanProcessor(session)
        provider.add_span_processor(processor)
        spans = agent_run(provider)
    assert processor.force_flush(30_000)
    assert (processor.recorded, processor.failures.count) == (4, 0)

    events = events_of(service.replay(api_key, session.session_id))
    assert service.statuses(session.session_id) == {"AUTHORITATIVE"}
    # In the order the spans ended.
    assert [e["kind"] for e in events] == [
        "gen_ai.chat",
        "gen_ai.execute_tool",
        "openinference.llm",
        "gen_ai.invoke_agent",
    ]
    chat, tool, _, agent = (e["payload"] for e in events)
    ctx, agent_ctx = spans["chat"].context, spans["agent"].context
    assert ctx is not None and agent_ctx is not None
    assert chat["trace_id"] == f"{ctx.trace_id:032x}" == agent["trace_id"]
    assert chat["span_id"] == f"{ctx.span_id:016x}"
    assert chat["parent_span_id"] == agent["span_id"] == f"{agent_ctx.span_id:016x}"
    assert agent["parent_span_id"] is None
    for p in (chat, agent):
        assert RFC3339_NS.fullmatch(p["start_time"]) and RFC3339_NS.fullmatch(p["end_time"])
    assert chat["start_time"] == rfc3339_ns(spans["chat"].start_time)
    assert chat["span_kind"] == "CLIENT" and chat["name"] == "chat gpt-x"
    assert chat["scope"] == {"name": "test.genai", "version": "1.2.3"}
    attrs = chat["attributes"]
    assert attrs["gen_ai.request.model"] == "gpt-x"
    assert attrs["gen_ai.usage.input_tokens"] == 412
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert attrs["app.request_number"] == str(2**62)
    # No content unless asked for: the keys withheld are named.
    assert "IBAN" not in json.dumps(events)
    assert "legacy content" not in json.dumps(events)
    assert chat["content_captured"] is False
    assert chat["withheld"] == [
        "content",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.prompt.0.content",
    ]
    assert chat["events"][0]["name"] == "gen_ai.user.message"
    assert chat["events"][0]["attributes"] == {"role": "user"}
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call_1"
    assert tool["withheld"] == ["gen_ai.tool.call.arguments"]
    assert tool["status"] == {"code": "ERROR", "description": "order service down"}


def test_content_only_when_asked_for(client: Client, service: Service, api_key: str) -> None:
    provider = TracerProvider()
    with client.session() as session:
        provider.add_span_processor(AgentChainSpanProcessor(session, capture_content=True))
        agent_run(provider)
    assert client.flush(timeout=30).complete
    chat = events_of(service.replay(api_key, session.session_id))[0]["payload"]
    assert chat["content_captured"] is True and chat["withheld"] == []
    assert chat["attributes"]["gen_ai.input.messages"] == MESSAGES
    assert chat["attributes"]["gen_ai.prompt.0.content"] == "legacy content"
    assert chat["events"][0]["attributes"]["content"] == "my IBAN is …"


class NoWaitOnThisThread(threading.Condition):
    """The client's condition variable, failing if the test's thread ever waits on it."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def wait(self, timeout: float | None = None) -> bool:
        if threading.get_ident() == self.thread:
            raise AssertionError("on_end waited")
        return super().wait(timeout)


def test_on_end_never_waits_when_the_journal_is_full(tmp_path: Path) -> None:
    """The server never answers, the journal's cap is reached: on_end does not
    wait for room (the client would wait an hour), it counts and reports."""
    reported: list[AgentChainError] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "3600"})

    client = Client(
        "http://127.0.0.1:9",
        "csk_unused",
        journal_dir=tmp_path,
        on_error=reported.append,
        max_pending_bytes=8 * 1024,
        full_timeout=3600,
        keep_journal=True,
        transport=httpx.MockTransport(unavailable),
    )
    client.cond = NoWaitOnThisThread(threading.get_ident())
    try:
        session = client.session()
        processor = AgentChainSpanProcessor(session)
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        for i in range(30):
            with tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat", "pad": "x" * 1000, "i": i}
            ):
                pass
        assert processor.recorded + processor.failures.count == 30
        assert 0 < processor.recorded < 30 and processor.failures.count > 0
        assert isinstance(processor.failures.last_error, JournalFullError)
        full = [e for e in reported if isinstance(e, JournalFullError)]
        assert len(full) == processor.failures.count  # every one reported to on_error
        assert client.status().errors >= len(full)
        assert session.next_seq == processor.recorded  # what was recorded is journaled
    finally:
        client.close(timeout=0)


def test_on_end_never_raises_into_the_application(tmp_path: Path) -> None:
    class Broken:
        def record(self, kind: str, payload: Any, *, timeout: float | None = None) -> Any:
            raise RuntimeError("disk on fire")

    reported: list[AgentChainError] = []
    processor = AgentChainSpanProcessor(Broken(), on_error=reported.append)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span(
        "chat", attributes={"gen_ai.operation.name": "chat"}
    ):
        pass
    assert processor.failures.count == 1 and "disk on fire" in str(reported[0])


def traced_transport(
    tracer: trace.Tracer,
) -> Callable[[httpx.HTTPTransport, httpx.Request], httpx.Response]:
    """`httpx.HTTPTransport.handle_request` instrumented as
    opentelemetry-instrumentation-httpx does it: a CLIENT span per request,
    unless the context suppresses instrumentation."""
    original = httpx.HTTPTransport.handle_request

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        if otel_context.get_value(
            otel_context._SUPPRESS_INSTRUMENTATION_KEY
        ) or otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY):
            return original(self, request)
        with tracer.start_as_current_span(
            f"{request.method} {request.url.path}",
            kind=trace.SpanKind.CLIENT,
            attributes={"url.full": str(request.url)},
        ):
            return original(self, request)

    return handle_request


def test_its_own_http_makes_no_spans(
    service: Service, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(
        httpx.HTTPTransport, "handle_request", traced_transport(provider.get_tracer("httpx"))
    )
    # The instrumentation works: the application's own request is traced.
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    assert [s.name for s in exporter.get_finished_spans()] == ["GET /readyz"]

    with Client(service.url, api_key, journal_dir=tmp_path) as client:
        with client.session() as session:
            provider.add_span_processor(AgentChainSpanProcessor(session))
            with provider.get_tracer("app").start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat"}
            ):
                pass
        assert client.flush(timeout=30).complete  # POST /v1/ingest, GET /v1/keys
    # Continuing a session not in the journal reads the server's head, on the
    # caller's thread: no span either.
    with Client(service.url, api_key, journal_dir=tmp_path / "other") as client:
        with client.session(session.session_id) as again:
            assert again.next_seq == 1
            again.record("note", {"continued": True})
        assert client.flush(timeout=30).complete
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["GET /readyz", "chat"], names
