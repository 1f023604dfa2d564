"""GET /v1/keys: every seal key ever used, for auditors, without authentication."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from ..runtime import Runtime
from ..storage import signing_keys
from ..storage.database import DatabaseUnavailable
from .auth import unavailable


def routes(runtime: Runtime) -> Blueprint:
    bp = Blueprint("keys", __name__)

    @bp.get("/v1/keys")
    async def list_keys() -> Response:
        try:
            keys = await signing_keys.all_keys(runtime.db)
        except DatabaseUnavailable as exc:
            return unavailable(runtime, str(exc))
        return jsonify(
            {
                "keys": [
                    {
                        "key_id": k.key_id,
                        "alg": "Ed25519",
                        "public_key": k.public_key.hex(),
                        "active": k.active,
                    }
                    for k in keys
                ]
            }
        )

    return bp
