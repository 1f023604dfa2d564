"""Liveness and readiness probes."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from ..runtime import Runtime
from ..storage import migrations
from ..storage.database import DatabaseUnavailable


def routes(runtime: Runtime) -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    async def healthz() -> Response:
        """The process is up and serving."""
        return jsonify({"status": "ok"})

    @bp.get("/readyz")
    async def readyz() -> tuple[Response, int]:
        """The database answers and every migration is applied."""
        try:
            pending = await migrations.pending(runtime.db)
        except DatabaseUnavailable as exc:
            return jsonify({"status": "unavailable", "database": str(exc)}), 503
        if pending or not runtime.ready:
            body = {"status": "starting", "pending_migrations": pending}
            return jsonify(body), 503
        return jsonify({"status": "ready", "seal_key": runtime.signer.key_id}), 200

    return bp
