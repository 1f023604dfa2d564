"""OpenTelemetry: a `SpanProcessor` that records finished GenAI spans as events.

    from agent_chain import Client
    from agent_chain.otel import AgentChainSpanProcessor

    client = Client(url, api_key)
    session = client.session()
    provider.add_span_processor(AgentChainSpanProcessor(session))  # a TracerProvider

A span is recorded when it ends, if it carries the GenAI semantic conventions:
kind ``gen_ai.<gen_ai.operation.name>`` (``gen_ai.chat``,
``gen_ai.execute_tool``, ``gen_ai.invoke_agent``, ...), or else an OpenInference
span kind: ``openinference.<kind>`` (``openinference.llm``,
``openinference.tool``, ...). Other spans are not recorded. The payload holds
the ids as hex strings (``trace_id``, ``span_id``, ``parent_span_id``), the
times as RFC 3339 strings with nanoseconds (``start_time``, ``end_time``) and
``duration_ns``, ``name``, ``span_kind``, ``status``, the span's
``attributes``, ``events`` and ``links``, its instrumentation ``scope`` and the
``service.*`` attributes of its resource.

Message content (``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, tool call arguments and results, the legacy
``gen_ai.prompt.*`` / ``gen_ai.completion.*``, OpenInference's ``input.value``,
``output.value``, ``llm.input_messages.*``, documents, ...) is recorded only
with ``capture_content=True``; otherwise the keys left out are listed in
``withheld``.

`on_end` never blocks: `record` does no network I/O, and the processor never
waits for room in a full journal (``timeout=0``): a span that cannot be
recorded is counted (`failures`) and reported to the client's ``on_error`` and
`status()` — never dropped silently. `on_end` never raises into the
application. The SDK's own HTTP requests run with OTel's suppress-instrumentation
context key set, so an instrumented httpx makes no spans of them.
`force_flush` flushes the client; `shutdown` closes nothing (the session and the
client are the caller's).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._integration import FailureCounter, Recorder, record_fitted
from .errors import AgentChainError
from .jsonsafe import jsonable, safe_str, text

__all__ = ["AgentChainSpanProcessor", "is_content_attribute", "rfc3339_ns", "span_event_kind"]

OPERATION = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"

_CONTENT_KEYS = (
    # OTel GenAI semantic conventions (current and legacy)
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.retrieval.query",
    "gen_ai.retrieval.documents",
    "gen_ai.embeddings.input",
    "gen_ai.event.content",
    # OpenInference
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "llm.prompt_template.template",
    "llm.prompt_template.variables",
    "retrieval.documents",
    "reranker.query",
    "reranker.input_documents",
    "reranker.output_documents",
    "embedding.embeddings",
    "message.content",
    "message.contents",
    "tool_call.function.arguments",
    "document.content",
)
# In span events (gen_ai.user.message, gen_ai.choice, ...), these keys hold content too.
_EVENT_CONTENT_KEYS = frozenset({"content", "message", "body", "tool_calls", "arguments"})
_KIND_CHARS = re.compile(r"[^A-Za-z0-9_.:/\-]")


def is_content_attribute(key: str) -> bool:
    """Whether an attribute holds message content (recorded only on request)."""
    return any(key == p or key.startswith(p + ".") for p in _CONTENT_KEYS)


def span_event_kind(attributes: Mapping[str, Any]) -> str | None:
    """The event kind for a span with these attributes, or None (not GenAI)."""
    op = attributes.get(OPERATION)
    if isinstance(op, str) and op:
        return "gen_ai." + _KIND_CHARS.sub("_", op)[:100]
    oi = attributes.get(OPENINFERENCE_KIND)
    if isinstance(oi, str) and oi:
        return "openinference." + _KIND_CHARS.sub("_", oi.lower())[:100]
    return None


def rfc3339_ns(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 UTC with 9 fraction digits."""
    if ns is None:
        return None
    seconds, frac = divmod(ns, 1_000_000_000)
    t = datetime.fromtimestamp(seconds, UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


class AgentChainSpanProcessor(SpanProcessor):
    """Records finished GenAI spans into `session` (see the module doc)."""

    def __init__(
        self,
        session: Recorder,
        *,
        capture_content: bool = False,
        on_error: Callable[[AgentChainError], None] | None = None,
    ) -> None:
        self.session = session
        self.capture_content = capture_content
        self.failures = FailureCounter(session, on_error)
        """Spans that could not be recorded (``.count``, ``.last_error``)."""
        self.recorded = 0
        """Spans recorded as events."""
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attributes = span.attributes or {}
            kind = span_event_kind(attributes)
            if kind is None:
                return
            payload = self.payload(span)
            keep = {k: payload[k] for k in ("trace_id", "span_id", "parent_span_id", "name")}
            record_fitted(self.session, kind, payload, keep, timeout=0)
            with self._lock:
                self.recorded += 1
        except AgentChainError as exc:  # journal full, session stopped: counted, reported
            self.failures(exc)
        except Exception as exc:  # never into the application
            err = AgentChainError(f"span {span.name!r} not recorded: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            self.failures(err)

    def payload(self, span: ReadableSpan) -> dict[str, Any]:
        """The event payload for a finished span."""
        withheld: set[str] = set()
        ctx = span.context
        parent = span.parent
        start, end = span.start_time, span.end_time
        status = span.status
        scope = span.instrumentation_scope
        resource = span.resource.attributes if span.resource is not None else {}
        attributes = span.attributes or {}
        return {
            "trace_id": None if ctx is None else f"{ctx.trace_id:032x}",
            "span_id": None if ctx is None else f"{ctx.span_id:016x}",
            "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
            "parent_is_remote": None if parent is None else bool(parent.is_remote),
            "name": text(span.name),
            "span_kind": span.kind.name,
            "start_time": rfc3339_ns(start),
            "end_time": rfc3339_ns(end),
            "duration_ns": None if start is None or end is None else jsonable(end - start),
            "status": {
                "code": status.status_code.name,
                "description": None if status.description is None else text(status.description),
            },
            "operation": jsonable(attributes.get(OPERATION)),
            "attributes": self._attributes(attributes, withheld, event=False),
            "events": [
                {
                    "name": text(e.name),
                    "time": rfc3339_ns(e.timestamp),
                    "attributes": self._attributes(e.attributes or {}, withheld, event=True),
                }
                for e in span.events
            ],
            "links": [
                {
                    "trace_id": f"{link.context.trace_id:032x}",
                    "span_id": f"{link.context.span_id:016x}",
                    "attributes": self._attributes(link.attributes or {}, withheld, event=False),
                }
                for link in span.links
            ],
            "scope": None
            if scope is None
            else {"name": text(scope.name), "version": jsonable(scope.version)},
            "resource": {
                str(k): jsonable(v) for k, v in resource.items() if str(k).startswith("service.")
            },
            "content_captured": self.capture_content,
            "withheld": sorted(withheld),
        }

    def _attributes(
        self, attributes: Mapping[str, Any], withheld: set[str], *, event: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            k = str(key)
            if not self.capture_content and (
                is_content_attribute(k) or (event and k in _EVENT_CONTENT_KEYS)
            ):
                withheld.add(k)
                continue
            out[safe_str(k)] = jsonable(value)
        return out

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flushes the session's client (sends and waits for the seals)."""
        client = getattr(self.session, "client", None)
        flush = getattr(client, "flush", None)
        if not callable(flush):
            return True
        report = flush(timeout=timeout_millis / 1000)
        return bool(getattr(report, "complete", False))
