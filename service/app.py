"""The composition root: the only place that builds the concrete parts and wires them."""

from __future__ import annotations

import logging
import secrets
import time
from functools import partial

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import logs
from .api import health, ingest, keys, metrics, openapi, sessions
from .api.problems import problem
from .config import Settings
from .runtime import Runtime

access_log = logging.getLogger("service.access")


def create_app(settings: Settings | None = None) -> QuartTrio:
    settings = settings or Settings.from_env()
    runtime = Runtime(settings)
    stats = metrics.Metrics()

    app = QuartTrio("service")
    # Quart stops buffering a body past this and raises 413 (checked in ingest).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["runtime"] = runtime

    for bp in (
        health.routes(runtime),
        keys.routes(runtime),
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
    async def tag_request() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else None
        logs.request_id.set(rid or secrets.token_hex(8))
        request.started_at = time.perf_counter()  # type: ignore[attr-defined]

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
        code = {404: "not_found", 413: "too_large", 415: "unsupported_media_type"}.get(
            status, "bad_request" if status < 500 else "internal"
        )
        return problem(status, code, err.description or err.name)

    @app.errorhandler(Exception)
    async def crash(err: Exception) -> Response:
        logging.getLogger("service").exception("unhandled error")
        return problem(500, "internal", "an internal error occurred; it has been logged")

    return app
