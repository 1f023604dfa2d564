"""POST /v1/ingest (PROTOCOL §3): read, authenticate, verify off the loop, hand to
the session's actor, map the outcome.

The hot path, served straight from ASGI rather than through Quart's per-request
machinery (contexts, hooks, wrappers: ~18 % of a worker's CPU per batch). What
every request gets stays one implementation shared with the Quart routes:
authentication (`auth.authenticate`), problem bodies (`problems`), the request
id, the access log, the metrics and the body budget (`exchange`). The body is
always read to its end (or the connection is closed), so nothing needs
draining here.

The body is read by the request's own task, when it is needed (after the
authentication and the header checks), not by a task beside it: at moderate
load each task switch costs a worker a pass of its loop, and the body of a
batch usually arrives with its head. A client that leaves while its body is
read gets no answer; one that leaves after it does not stop its batch: the
batch is committed (or not) as if the client had stayed, and its retry is
answered `duplicate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any, assert_never

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, HTTPScope
from quart import Blueprint, Response

import hashcore

from .. import logs
from ..core.commit import Submission
from ..core.credentials import Principal, Scope
from ..core.outcomes import Appended, Conflict, Failed, KeyRevoked, Overloaded, Unavailable
from ..runtime import Runtime
from ..storage.database import DatabaseUnavailable
from .auth import ApiKeyCache, authenticate
from .exchange import BodyAdmission, Observer, drained, request_id
from .metrics import Metrics
from .problems import Reply, problem_reply, unauthenticated, unavailable
from .responses import json_bytes

log = logging.getLogger(__name__)

ROUTE = "/v1/ingest"
# Bodies up to this size are verified on the event loop: it takes hashcore
# ~0.3 ms at most (~430 MB/s), less than what handing it to a thread costs the
# worker (the hand-off, the wake-ups and the GIL passed back and forth: ~0.3 ms
# of CPU per 57 KiB batch, measured 1.45 -> 1.12 ms of server CPU per batch and
# 1.19x events/s in bench/ingest_bench.py). Larger bodies (up to 8 MiB, tens of
# milliseconds) are verified in a worker thread, off the loop.
_INLINE_BYTES = 128 * 1024


class _ClientGone(Exception):
    """The client closed its connection before its request was answered."""


class _Body:
    """A request body, read as it is needed, up to a limit (past it, the rest is
    read and dropped).

    hypercorn's `receive` takes from a trio memory channel, and every call of it
    is a checkpoint, even when a message is waiting. What is already queued is
    taken from the channel directly, so a body that arrived with its head is
    read without a task switch.
    """

    def __init__(self, receive: ASGIReceiveCallable, length: int | None, limit: int) -> None:
        self._receive = receive
        channel = getattr(receive, "__self__", None)
        self._queued = (
            channel.receive_nowait if isinstance(channel, trio.MemoryReceiveChannel) else None
        )
        self._length = length
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.over_limit = False
        self.ended = False

    @property
    def settled(self) -> bool:
        """The body is whole, or known to be too large."""
        return self.ended or self.over_limit

    async def read(self, *, to_end: bool = False) -> None:
        """Read until the body is settled; with `to_end`, until it ended (the rest
        dropped). Raises _ClientGone when the client left first."""
        while not (self.ended or (self.over_limit and not to_end)):
            message = await self._next()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
            self._size += len(chunk)
            if self._size > self._limit:
                self.over_limit = True
                self._chunks.clear()
            elif chunk:
                self._chunks.append(chunk)
            # h11 checked the Content-Length: all of it is all there is.
            if not message.get("more_body", False) or self._size == self._length:
                self.ended = True

    async def _next(self) -> ASGIReceiveEvent:
        try:
            if self._queued is not None:
                try:
                    return self._queued()  # type: ignore[no-any-return]
                except trio.WouldBlock:
                    pass
            return await self._receive()
        except trio.EndOfChannel:
            raise _ClientGone from None

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


async def _send(send: ASGISendCallable, reply: Reply, rid: str) -> None:
    headers = [
        (b"content-type", reply.content_type.encode()),
        (b"content-length", str(len(reply.body)).encode()),
        (b"x-request-id", rid.encode()),
        *((k.encode(), v.encode()) for k, v in reply.headers.items()),
    ]
    # Shielded, as for Quart's routes (app._ShieldedSendConnection): a send cut
    # half-way leaves a keep-alive connection hung.
    with trio.CancelScope(shield=True):
        start = {"type": "http.response.start", "status": reply.status, "headers": headers}
        await send(start)  # type: ignore[arg-type]
        await send({"type": "http.response.body", "body": reply.body, "more_body": False})


class IngestEndpoint:
    def __init__(
        self,
        runtime: Runtime,
        stats: Metrics,
        observer: Observer,
        admission: BodyAdmission,
        config: Mapping[str, Any],
    ) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._stats = stats
        self._observer = observer
        self._admission = admission
        self._api_keys = ApiKeyCache(ttl=self._settings.key_cache_seconds)
        # The app's config: Quart's BODY_TIMEOUT applies to this route too.
        self._config = config

    async def __call__(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        started = time.perf_counter()
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        rid = request_id(headers.get("x-request-id", b"").decode("latin-1"))
        logs.request_id.set(rid)
        raw_length = headers.get("content-length")
        length = int(raw_length) if raw_length is not None else None  # h11 checked it
        body = _Body(receive, length, self._settings.max_body_bytes)
        try:
            reply = await self._answer(headers, length, body)
            if (
                reply.headers.get("Connection") != "close"
                and not body.ended
                and not await drained(partial(body.read, to_end=True))
            ):
                reply = replace(reply, headers={**reply.headers, "Connection": "close"})
        except _ClientGone:
            return  # nobody to answer
        await _send(send, reply, rid)
        self._observer.observe("POST", scope["path"], ROUTE, reply.status, reply.code, started)

    async def _answer(self, headers: dict[str, bytes], length: int | None, body: _Body) -> Reply:
        try:
            return await self._serve(headers, length, body)
        except _ClientGone:
            raise
        except DatabaseUnavailable as exc:
            return unavailable(str(exc), self._settings.retry_after_seconds)
        except Exception:
            log.exception("unhandled error")
            detail = "an internal error occurred; nothing was stored"
            return problem_reply(500, "internal", detail)

    async def _serve(self, headers: dict[str, bytes], length: int | None, body: _Body) -> Reply:
        reserved = self._admission.admit(length, "transfer-encoding" in headers)
        if isinstance(reserved, Reply):
            return reserved
        try:
            return await self._ingest(headers, length, body)
        finally:
            self._admission.release(reserved)

    async def _ingest(self, headers: dict[str, bytes], length: int | None, body: _Body) -> Reply:
        settings = self._settings
        authorization = headers.get("authorization", b"").decode("latin-1")
        principal = await authenticate(self._runtime, Scope.INGEST, authorization, self._api_keys)
        if isinstance(principal, Reply):
            return principal
        content_type = headers.get("content-type", b"").decode("latin-1")
        if not _is_json_utf8(content_type):
            return problem_reply(
                415,
                "unsupported_media_type",
                f"send 'Content-Type: application/json' (UTF-8), not '{content_type or 'nothing'}'",
            )
        too_large = problem_reply(
            413,
            "too_large",
            f"the body is over {settings.max_body_bytes} bytes",
            headers={"Connection": "close"},  # its rest is not worth waiting for
        )
        if length is not None and length > settings.max_body_bytes:
            return too_large
        if not body.settled:
            with trio.move_on_after(self._config["BODY_TIMEOUT"]):
                await body.read()
        if not body.settled:
            return problem_reply(
                408,
                "request_timeout",
                "the request body was not received in time",
                headers={"Connection": "close"},
            )
        if body.over_limit:
            return too_large
        return await self._commit(principal, body.take())

    async def _verify(self, body: bytes) -> hashcore.Batch:
        max_events = self._settings.max_batch_events
        if len(body) <= _INLINE_BYTES:
            return hashcore.verify_batch(body, max_events)
        return await trio.to_thread.run_sync(
            hashcore.verify_batch, body, max_events, limiter=self._runtime.verify_limiter
        )

    async def _commit(self, principal: Principal, body: bytes) -> Reply:
        settings = self._settings
        stats = self._stats
        try:
            batch = await self._verify(body)
        except hashcore.BatchError as err:
            return problem_reply(
                413 if err.code == "too_large" else 400,
                err.code,
                err.detail,
                index=err.index,
                member=err.member,
                expected=err.expected,
                got=err.got,
            )
        del body  # the batch holds what is needed; a megabyte less while waiting
        with stats.batch_seconds.time():
            outcome = await self._runtime.actors.submit(
                (principal.tenant_id, batch.session_id),
                Submission(principal.tenant_id, principal.api_key_id, batch),
            )
        match outcome:
            case Appended():
                stats.events_accepted.inc(outcome.accepted)
                stats.batches.labels("duplicate" if outcome.duplicate else "appended").inc()
                answer = {
                    "session_id": outcome.session_id,
                    "accepted": outcome.accepted,
                    "duplicates": outcome.duplicates,
                    "duplicate": outcome.duplicate,
                    "head": {"seq": outcome.head_seq, "hash": outcome.head_hash},
                }
                return Reply(
                    200, json_bytes(answer, raw={"seal": outcome.seal}), "application/json"
                )
            case Conflict():
                return problem_reply(
                    409,
                    outcome.code,
                    outcome.detail,
                    next_seq=outcome.next_seq,
                    head_hash=outcome.head_hash,
                    index=outcome.index,
                )
            case Overloaded():
                return problem_reply(
                    429,
                    "overloaded",
                    outcome.reason,
                    headers={"Retry-After": str(settings.retry_after_seconds)},
                )
            case Unavailable():
                return unavailable(
                    f"{outcome.reason}; send the batch again: it is stored at most once "
                    "(if this attempt was, the retry is answered duplicate)",
                    settings.retry_after_seconds,
                )
            case KeyRevoked():
                return unauthenticated("the API key was revoked")
            case Failed():
                return problem_reply(
                    500, "internal", "an internal error occurred; nothing was stored"
                )
        assert_never(outcome)


def _is_json_utf8(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def routes() -> Blueprint:
    """The route as Quart knows it: so that other methods get 405 with `Allow`.
    A POST never reaches it: the app sends it to `IngestEndpoint` first."""
    bp = Blueprint("ingest", __name__)

    @bp.post(ROUTE)
    async def ingest() -> Response:  # pragma: no cover - dispatched before Quart
        raise AssertionError("POST /v1/ingest is served by IngestEndpoint")

    return bp
