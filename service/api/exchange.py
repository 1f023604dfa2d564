"""What every request gets, whichever way it is served (a Quart route, or the
ingest fast path): a request id, an access-log line and the request metrics,
and a reservation of its body's bytes in the worker's budget."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import trio

from . import metrics
from .inflight import BodyBudget
from .problems import Reply, overloaded

access_log = logging.getLogger("service.access")

# How long a response waits for the rest of a request body it did not need (a
# 401 before the upload ended, say) before the connection is closed instead.
DRAIN_SECONDS = 5.0


async def drained(rest_of_body: Callable[[], Awaitable[object]]) -> bool:
    """Whether the rest of a request body arrived (and was dropped) in time, so
    that the connection can serve the client's next request; if not, the
    response must say that the connection closes."""
    with trio.move_on_after(DRAIN_SECONDS) as scope:
        await rest_of_body()
    return not scope.cancelled_caught


def request_id(incoming: str | None) -> str:
    """The client's X-Request-Id if it is a sane one, else a new one."""
    if incoming and len(incoming) <= 64 and incoming.isprintable():
        return incoming
    return secrets.token_hex(8)


class Observer:
    """The access log and the request metrics: one line and one count a request."""

    def __init__(self, stats: metrics.Metrics) -> None:
        self._stats = stats

    def observe(
        self, method: str, path: str, route: str, status: int, code: str, started: float
    ) -> None:
        self._stats.requests.labels(route, str(status), code).inc()
        elapsed = time.perf_counter() - started
        access_log.info(
            "%s %s %d",
            method,
            path,
            status,
            extra={
                "fields": {
                    "method": method,
                    "path": path,
                    "status": status,
                    "code": code or None,
                    "ms": round(elapsed * 1000, 2),
                }
            },
        )


class BodyAdmission:
    """Reserves a request body's bytes (its Content-Length, or the body limit when
    it is chunked) before it is read; refuses it unread past the bound."""

    def __init__(self, budget: BodyBudget, max_body: int, retry_after: int) -> None:
        self.budget = budget
        self._max_body = max_body
        self._retry_after = retry_after

    def admit(self, content_length: int | None, chunked: bool) -> int | Reply:
        """The bytes reserved (0: no body), or the 429 that refuses the request."""
        if content_length is None and not chunked:
            return 0
        size = min(content_length or self._max_body, self._max_body)
        if not self.budget.take(size):
            return overloaded(
                "too many request bytes in flight in this worker", self._retry_after, close=True
            )
        return size

    def release(self, size: int) -> None:
        self.budget.give_back(size)
