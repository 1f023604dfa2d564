"""Bearer-key authentication for the API (PROTOCOL §3 step 1)."""

from __future__ import annotations

from quart import Response, request

from ..core.credentials import Principal, Scope, parse_token, secret_matches
from ..runtime import Runtime
from ..storage import tenants
from ..storage.database import DatabaseUnavailable
from .problems import problem


def unauthenticated(detail: str) -> Response:
    return problem(401, "unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def unavailable(runtime: Runtime, detail: str) -> Response:
    retry = str(runtime.settings.retry_after_seconds)
    return problem(503, "unavailable", detail, headers={"Retry-After": retry})


async def authenticate(runtime: Runtime, scope: Scope) -> Principal | Response:
    """The caller's principal, or the problem response that refuses it."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthenticated("send 'Authorization: Bearer <api key>'")
    parsed = parse_token(token.strip())
    if parsed is None:
        return unauthenticated("the API key is not in a known format")
    key_id, secret = parsed
    try:
        row = await tenants.find_key(runtime.db, key_id)
    except DatabaseUnavailable as exc:
        return unavailable(runtime, f"cannot check the API key: {exc}")
    # The same answer for unknown, wrong and revoked keys: no oracle for guessing.
    if row is None or not secret_matches(secret, row.secret_hash) or row.revoked_at is not None:
        return unauthenticated("unknown or revoked API key")
    if scope not in row.scopes:
        return problem(403, "forbidden", f"this API key lacks the '{scope}' scope")
    return Principal(row.tenant_id, row.tenant, row.key_id, row.scopes)
