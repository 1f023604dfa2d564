"""LangChain: a callback handler that records an agent's run into a session.

    from agent_chain import Client
    from agent_chain.langchain import AgentChainCallbackHandler

    client = Client(url, api_key)
    with client.session() as session:
        handler = AgentChainCallbackHandler(session)
        agent.invoke(inputs, {"callbacks": [handler]})   # or await agent.ainvoke(...)
    client.flush(timeout=10)

or, for every run in a block without passing callbacks: ``with recording(session):``.

The handler runs inline (``run_inline = True``), so events keep the order of
the callbacks, sync and async alike. It records, as events of these kinds:

- ``chain.start`` / ``chain.end`` / ``chain.error``: the root run only (the
  first run the handler sees without a known parent); inner chains (a graph's
  nodes, a sequence's steps) are not recorded;
- ``llm.start`` (``model_type`` ``chat`` with ``messages``, or ``llm`` with
  ``prompts``) / ``llm.end`` (``generations``, ``llm_output``) / ``llm.error``;
- ``tool.start`` (``input``, ``inputs``, ``tool_call_id``) / ``tool.end``
  (``output``, ``tool_call_id``) / ``tool.error``;
- ``retriever.start`` (``query``) / ``retriever.end`` (``documents``) /
  ``retriever.error``;
- ``agent.action`` (``tool``, ``tool_input``, ``log``, ``tool_call_id``) /
  ``agent.finish`` (``return_values``, ``log``);
- ``custom.event`` (``name``, ``data``), ``retry`` (``attempt``, ``error``).

No per-token events. Every payload holds ``run_id`` and ``parent_run_id`` (as
strings; None for the root), ``tags`` and ``metadata`` (those of the run's
start, repeated on its end), and ``name``. Values are made JSON-safe
(`agent_chain.jsonsafe`): messages, documents and other objects become their
fields, UUIDs strings. An event over the size cap is recorded with its long
strings cut (``agent_chain.truncated``), never left out. Secrets in a model's
invocation parameters are redacted; anything else is recorded as is: use the
client's ``mask`` to keep personal data out of the chain.

An event that cannot be recorded (the journal stayed full, the session was
stopped) is counted in `failures` and reported to the client's ``on_error``;
with ``raise_error=True`` the exception also propagates into the run.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.tracers.context import register_configure_hook

from ._integration import FailureCounter, Recorder, record_fitted
from .errors import AgentChainError
from .jsonsafe import jsonable, safe_str, text

__all__ = ["AgentChainCallbackHandler", "recording"]

_SECRET = re.compile(r"api[_-]?key|secret|password|passwd|authorization|credential|token$", re.I)
_MESSAGE_FIELDS = (
    "name",
    "id",
    "tool_calls",
    "invalid_tool_calls",
    "tool_call_id",
    "status",
    "artifact",
    "usage_metadata",
    "additional_kwargs",
    "response_metadata",
)


@dataclass
class _Run:
    parent: UUID | None
    name: str | None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    root: bool = False
    tool_call_id: str | None = None


class AgentChainCallbackHandler(BaseCallbackHandler):
    """Records LangChain callbacks as events of `session` (see the module doc)."""

    run_inline = True  # called in order, on the caller's thread or loop

    def __init__(
        self,
        session: Recorder,
        *,
        raise_error: bool = False,
        on_error: Callable[[AgentChainError], None] | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.raise_error = raise_error
        self.failures = FailureCounter(session, on_error)
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()

    # ---- bookkeeping ------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        serialized: Mapping[str, Any] | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        *,
        tool_call_id: str | None = None,
    ) -> _Run:
        with self._lock:
            root = parent_run_id is None or parent_run_id not in self._runs
            run = _Run(
                parent=parent_run_id,
                name=_name(serialized, kwargs),
                tags=[safe_str(str(t)) for t in tags or ()],
                metadata=jsonable(dict(metadata or {})),
                root=root,
                tool_call_id=tool_call_id,
            )
            self._runs[run_id] = run
        return run

    def _end(self, run_id: UUID, parent_run_id: UUID | None, tags: Any = None) -> _Run:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None:  # its start was before this handler was attached
            run = _Run(
                parent=parent_run_id,
                name=None,
                tags=[safe_str(str(t)) for t in tags or ()],
                root=parent_run_id is None,
            )
        return run

    def _known(self, run_id: UUID, parent_run_id: UUID | None = None) -> _Run:
        with self._lock:
            run = self._runs.get(run_id)
        return run if run is not None else _Run(parent=parent_run_id, name=None)

    def _record(self, kind: str, run_id: UUID, run: _Run, **fields: Any) -> None:
        ids: dict[str, Any] = {
            "run_id": str(run_id),
            "parent_run_id": None if run.parent is None else str(run.parent),
            "name": run.name,
            "tags": run.tags,
            "metadata": run.metadata,
        }
        payload = {**ids, **{k: jsonable(v) for k, v in fields.items()}}
        try:
            record_fitted(self.session, kind, payload, ids)
        except AgentChainError as exc:
            self.failures(exc)
            if self.raise_error:
                raise

    # ---- chains: the root run only ----------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._start(run_id, parent_run_id, serialized, tags, metadata, kwargs)
        if run.root:
            self._record("chain.start", run_id, run, inputs=inputs)

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        if run.root:
            self._record("chain.end", run_id, run, outputs=outputs)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        if run.root:
            self._record("chain.error", run_id, run, error=_error(error))

    # ---- models -----------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._start(run_id, parent_run_id, serialized, tags, metadata, kwargs)
        self._record(
            "llm.start",
            run_id,
            run,
            model_type="chat",
            messages=[[_message(m) for m in batch] for batch in messages],
            invocation_params=_redacted(kwargs.get("invocation_params")),
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._start(run_id, parent_run_id, serialized, tags, metadata, kwargs)
        self._record(
            "llm.start",
            run_id,
            run,
            model_type="llm",
            prompts=prompts,
            invocation_params=_redacted(kwargs.get("invocation_params")),
        )

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id, tags)
        self._record(
            "llm.end",
            run_id,
            run,
            generations=[[_generation(g) for g in batch] for batch in response.generations],
            llm_output=response.llm_output,
        )

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id, tags)
        self._record("llm.error", run_id, run, error=_error(error))

    # ---- tools ------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        call_id = kwargs.get("tool_call_id")
        tool_call_id = None if call_id is None else text(call_id)
        run = self._start(
            run_id, parent_run_id, serialized, tags, metadata, kwargs, tool_call_id=tool_call_id
        )
        self._record(
            "tool.start", run_id, run, input=input_str, inputs=inputs, tool_call_id=tool_call_id
        )

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        call_id = run.tool_call_id or getattr(output, "tool_call_id", None)
        self._record(
            "tool.end",
            run_id,
            run,
            output=_message(output),
            tool_call_id=None if call_id is None else text(call_id),
        )

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        self._record("tool.error", run_id, run, error=_error(error), tool_call_id=run.tool_call_id)

    # ---- retrievers -------------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._start(run_id, parent_run_id, serialized, tags, metadata, kwargs)
        self._record("retriever.start", run_id, run, query=query)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        self._record("retriever.end", run_id, run, documents=[_document(d) for d in documents])

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._end(run_id, parent_run_id)
        self._record("retriever.error", run_id, run, error=_error(error))

    # ---- agents, custom events, retries -------------------------------------------

    def on_agent_action(
        self,
        action: AgentAction,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        call_id = getattr(action, "tool_call_id", None)
        self._record(
            "agent.action",
            run_id,
            self._known(run_id, parent_run_id),
            tool=action.tool,
            tool_input=action.tool_input,
            log=action.log,
            tool_call_id=None if call_id is None else text(call_id),
        )

    def on_agent_finish(
        self,
        finish: AgentFinish,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._record(
            "agent.finish",
            run_id,
            self._known(run_id, parent_run_id),
            return_values=finish.return_values,
            log=finish.log,
        )

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        known = self._known(run_id)
        run = _Run(
            parent=known.parent,
            name=known.name,
            tags=[safe_str(str(t)) for t in tags or ()] or known.tags,
            metadata=jsonable(dict(metadata or {})) or known.metadata,
        )
        self._record("custom.event", run_id, run, event=name, data=data)

    def on_retry(
        self,
        retry_state: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        outcome = getattr(retry_state, "outcome", None)
        error = None
        if outcome is not None and getattr(outcome, "failed", False):
            error = _error(outcome.exception())
        self._record(
            "retry",
            run_id,
            self._known(run_id, parent_run_id),
            attempt=getattr(retry_state, "attempt_number", None),
            error=error,
        )


# ---- automatic attachment ---------------------------------------------------------

_CURRENT: ContextVar[AgentChainCallbackHandler | None] = ContextVar(
    "agent_chain_langchain_handler", default=None
)
register_configure_hook(_CURRENT, inheritable=True)


@contextlib.contextmanager
def recording(session: Recorder, **options: Any) -> Iterator[AgentChainCallbackHandler]:
    """Every LangChain run started in this block (this thread or task, and what
    it spawns) records into `session`, without passing callbacks; yields the
    handler. `options` go to `AgentChainCallbackHandler`."""
    handler = AgentChainCallbackHandler(session, **options)
    token = _CURRENT.set(handler)
    try:
        yield handler
    finally:
        _CURRENT.reset(token)


# ---- values -------------------------------------------------------------------------


def _name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str | None:
    name = kwargs.get("name")
    if name is None and serialized:
        name = serialized.get("name")
        ident = serialized.get("id")
        if name is None and isinstance(ident, list) and ident:
            name = ident[-1]
    return None if name is None else text(name)


def _message(m: Any) -> Any:
    if not isinstance(m, BaseMessage):
        return jsonable(m)
    out: dict[str, Any] = {"type": m.type, "content": jsonable(m.content)}
    for f in _MESSAGE_FIELDS:
        v = getattr(m, f, None)
        if v is not None and v != {} and v != []:
            out[f] = jsonable(v)
    return out


def _generation(g: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(g, ChatGeneration):
        out["message"] = _message(g.message)
    else:
        out["text"] = jsonable(g.text)
    if g.generation_info:
        out["generation_info"] = jsonable(g.generation_info)
    return out


def _document(d: Any) -> Any:
    if not isinstance(d, Document):
        return jsonable(d)
    out: dict[str, Any] = {
        "page_content": jsonable(d.page_content),
        "metadata": jsonable(d.metadata),
    }
    if d.id is not None:
        out["id"] = jsonable(d.id)
    return out


def _error(error: BaseException) -> dict[str, Any]:
    return {"type": type(error).__qualname__, "message": text(error)}


def _redacted(params: Any) -> Any:
    if isinstance(params, Mapping):
        return {
            k: "[redacted]" if isinstance(k, str) and _SECRET.search(k) else _redacted(v)
            for k, v in params.items()
        }
    return jsonable(params)
