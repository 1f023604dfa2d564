"""What the LangChain and OpenTelemetry integrations share: recording an event
whatever its size, and reporting what could not be recorded (never silently)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import AgentChainError, InvalidEventError
from .jsonsafe import shrink

log = logging.getLogger("agent_chain")

TRUNCATED = "agent_chain.truncated"


class Recorder(Protocol):
    """What the integrations record into: a `Session` (or a test double)."""

    def record(
        self, kind: str, payload: Mapping[str, Any], *, timeout: float | None = None
    ) -> tuple[int, str]: ...


def record_fitted(
    session: Recorder,
    kind: str,
    payload: dict[str, Any],
    keep: Mapping[str, Any],
    timeout: float | None = None,
) -> tuple[int, str]:
    """Records `payload`; if it is over the event size cap, records it with long
    strings and lists cut instead, and as a last resort only `keep` (the ids):
    the event is never missing from the chain."""
    try:
        return session.record(kind, payload, timeout=timeout)
    except InvalidEventError as exc:
        if exc.rule != "too_large":
            raise
    for max_string, max_items in ((4096, 100), (256, 10)):
        try:
            cut = shrink(payload, max_string, max_items)
            return session.record(kind, {**cut, TRUNCATED: True}, timeout=timeout)
        except InvalidEventError as exc:
            if exc.rule != "too_large":
                raise
    withheld = {**keep, TRUNCATED: True, "note": "payload withheld: over the event size cap"}
    return session.record(kind, withheld, timeout=timeout)


class FailureCounter:
    """Events an integration could not record: counted, kept, and reported to
    the client's `on_error` (and `status()`), or to the given `on_error`."""

    def __init__(
        self, session: Recorder, on_error: Callable[[AgentChainError], None] | None
    ) -> None:
        self._lock = threading.Lock()
        self._session = session
        self._on_error = on_error
        self.count = 0
        self.last_error: AgentChainError | None = None

    def __call__(self, error: AgentChainError) -> None:
        with self._lock:
            self.count += 1
            self.last_error = error
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("on_error raised")
            return
        client = getattr(self._session, "client", None)
        report = getattr(client, "report", None)
        if callable(report):
            report(None, error)
        else:
            log.error("%s", error)
