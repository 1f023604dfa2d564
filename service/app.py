"""The composition root: the only place that builds the concrete parts and wires them."""

from __future__ import annotations

import logging
import os
import secrets
import time
from functools import partial

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent
from quart import Response, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    RequestEntityTooLarge,
    RequestTimeout,
)

from . import logs
from .api import framing, health, ingest, metrics, openapi, seal_keys, sessions
from .api.inflight import BodyBudget
from .api.problems import problem, unavailable
from .config import Settings
from .runtime import Runtime, tune_gc_for_serving
from .storage.database import DatabaseUnavailable

access_log = logging.getLogger("service.access")

# How long a response waits for the rest of a request body it did not need (a
# 401 before the upload ended, say) before the connection is closed instead.
_DRAIN_SECONDS = 5.0


class _ShieldedSendConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, with hypercorn's `send` shielded.

    quart-trio cancels the request's nursery as soon as hypercorn reports the
    stream closed, and that report happens *inside* the `send` of the last body
    chunk: the rest of that `send` (closing a connection whose request body was
    not read to the end, or re-arming the keep-alive timer) was cancelled half-way.
    The connection then hung for good: the client's next request on it was never
    answered, and idle connections never timed out. Hypercorn already shields
    its own socket writes, so shielding the whole `send` adds no new wait.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def shielded(message: ASGISendEvent) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await super().__call__(receive, shielded)


# Statuses werkzeug raises for us (routing, body limits), and their codes.
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


def create_app_from_env() -> QuartTrio:
    """The hypercorn entry point of a worker process (`service.app:create_app_from_env()`):
    the CLI wrote its settings to the environment; log as it does."""
    logs.configure(os.environ.get("LOG_LEVEL", "INFO").upper())
    app = create_app(Settings.from_env())
    tune_gc_for_serving()
    return app


def create_app(settings: Settings) -> QuartTrio:
    runtime = Runtime(settings)
    stats = metrics.Metrics()

    framing.install_problem_bodies()
    app = QuartTrio("service")
    app.asgi_http_class = _ShieldedSendConnection
    # '//' in a path is no route of ours: 404, never a redirect to the client's Host.
    app.url_map.merge_slashes = False
    # Quart stops buffering a body past this and raises 413 (checked in ingest).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["runtime"] = runtime
    bodies = BodyBudget(max(settings.max_inflight_bytes, settings.max_body_bytes))
    app.extensions["bodies"] = bodies

    for bp in (
        health.routes(runtime),
        seal_keys.routes(runtime),
        ingest.routes(runtime, stats),
        sessions.routes(runtime),
        metrics.routes(runtime, stats),
        openapi.routes(),
    ):
        app.register_blueprint(bp)

    @app.before_serving
    async def start() -> None:
        await app.nursery.start(runtime.run, [partial(stats.sample_forever, runtime)])

    @app.after_serving
    async def stop() -> None:
        await runtime.stop()

    @app.before_request
    async def tag_request() -> Response | None:
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else None
        logs.request_id.set(rid or secrets.token_hex(8))
        request.started_at = time.perf_counter()  # type: ignore[attr-defined]
        return admit_body()

    def admit_body() -> Response | None:
        """Reserve the body's bytes in the worker's budget, or refuse it unread."""
        if request.content_length is None and "Transfer-Encoding" not in request.headers:
            return None
        size = min(request.content_length or settings.max_body_bytes, settings.max_body_bytes)
        if not bodies.take(size):
            return problem(
                429,
                "overloaded",
                "too many request bytes in flight in this worker",
                headers={
                    "Retry-After": str(settings.retry_after_seconds),
                    "Connection": "close",
                },
            )
        request.body_reserved = size  # type: ignore[attr-defined]
        return None

    @app.teardown_request
    async def release_body(exc: BaseException | None) -> None:
        bodies.give_back(getattr(request, "body_reserved", 0))

    @app.after_request
    async def finish_body(response: Response) -> Response:
        """Read what is left of a body the handler did not need (an early 401, 403,
        415, 503), so that the connection can serve the client's next request;
        if it cannot be read (too large, too slow), say that the connection closes."""
        if response.headers.get("Connection") == "close":
            return response  # nothing more is read from this connection
        try:
            with trio.move_on_after(_DRAIN_SECONDS) as scope:
                await request.get_data(cache=False, as_text=False, parse_form_data=False)
            drained = not scope.cancelled_caught
        except (RequestEntityTooLarge, RequestTimeout):
            drained = False
        if not drained:
            response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def record(response: Response) -> Response:
        rid = logs.request_id.get() or ""
        response.headers["X-Request-Id"] = rid
        code = getattr(response, "problem_code", "")
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        stats.requests.labels(route, str(response.status_code), code).inc()
        elapsed = time.perf_counter() - getattr(request, "started_at", time.perf_counter())
        access_log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "code": code or None,
                    "ms": round(elapsed * 1000, 2),
                }
            },
        )
        return response

    @app.errorhandler(HTTPException)
    async def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal")
        headers = {}
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        if status == 408:
            headers["Connection"] = "close"
        return problem(status, code, err.description or err.name, headers=headers)

    @app.errorhandler(DatabaseUnavailable)
    async def database_unavailable(err: DatabaseUnavailable) -> Response:
        return unavailable(str(err), settings.retry_after_seconds)

    @app.errorhandler(Exception)
    async def crash(err: Exception) -> Response:
        logging.getLogger("service").exception("unhandled error")
        return problem(500, "internal", "an internal error occurred; it has been logged")

    return app
