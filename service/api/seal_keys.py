"""GET /v1/keys: every seal key ever used, for auditors, without authentication."""

from __future__ import annotations

from quart import Blueprint, Response, jsonify

from ..runtime import Runtime
from ..storage import seal_keys


def routes(runtime: Runtime) -> Blueprint:
    bp = Blueprint("seal_keys", __name__)

    @bp.get("/v1/keys")
    async def list_seal_keys() -> Response:
        keys = await seal_keys.all_seal_keys(runtime.db)
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
