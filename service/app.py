"""The composition root: the only place that builds the concrete parts and wires them."""

from __future__ import annotations

import logging
import os
import time
from functools import partial

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
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
from .api.connection import install_connection_handling
from .api.exchange import BodyAdmission, Observer, drained, request_id
from .api.inflight import BodyBudget
from .api.problems import Reply, problem, unavailable
from .config import Settings
from .runtime import Runtime, tune_gc_for_serving
from .storage.database import DatabaseUnavailable


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
    install_connection_handling()
    app = QuartTrio("service")
    app.asgi_http_class = _ShieldedSendConnection
    # '//' in a path is no route of ours: 404, never a redirect to the client's Host.
    app.url_map.merge_slashes = False
    # Quart stops buffering a body past this and raises 413 (checked in ingest).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["runtime"] = runtime
    bodies = BodyBudget(max(settings.max_inflight_bytes, settings.max_body_bytes))
    app.extensions["bodies"] = bodies
    admission = BodyAdmission(bodies, settings.max_body_bytes, settings.retry_after_seconds)
    observer = Observer(stats)
    fast = {
        ("POST", ingest.ROUTE): ingest.IngestEndpoint(
            runtime, stats, observer, admission, app.config
        )
    }
    quart_app = app.asgi_app

    async def dispatch(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """The ingest hot path goes straight to its endpoint; the rest to Quart."""
        if scope["type"] == "http":
            endpoint = fast.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await quart_app(scope, receive, send)

    app.asgi_app = dispatch  # type: ignore[method-assign]

    for bp in (
        health.routes(runtime),
        seal_keys.routes(runtime),
        ingest.routes(),
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
        logs.request_id.set(request_id(request.headers.get("X-Request-Id")))
        request.started_at = time.perf_counter()  # type: ignore[attr-defined]
        chunked = "Transfer-Encoding" in request.headers
        reserved = admission.admit(request.content_length, chunked)
        if isinstance(reserved, Reply):
            return reserved.response()
        request.body_reserved = reserved  # type: ignore[attr-defined]
        return None

    @app.teardown_request
    async def release_body(exc: BaseException | None) -> None:
        admission.release(getattr(request, "body_reserved", 0))

    @app.after_request
    async def finish_body(response: Response) -> Response:
        """Read what is left of a body the handler did not need (an early 401, 403,
        415, 503), so that the connection can serve the client's next request."""
        if response.headers.get("Connection") == "close":
            return response  # nothing more is read from this connection
        try:
            done = await drained(
                lambda: request.get_data(cache=False, as_text=False, parse_form_data=False)
            )
        except (RequestEntityTooLarge, RequestTimeout):
            done = False
        if not done:
            response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def record(response: Response) -> Response:
        response.headers["X-Request-Id"] = logs.request_id.get() or ""
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = getattr(request, "started_at", time.perf_counter())
        code = getattr(response, "problem_code", "")
        observer.observe(request.method, request.path, route, response.status_code, code, started)
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
        return unavailable(str(err), settings.retry_after_seconds).response()

    @app.errorhandler(Exception)
    async def crash(err: Exception) -> Response:
        logging.getLogger("service").exception("unhandled error")
        return problem(500, "internal", "an internal error occurred; it has been logged")

    return app
