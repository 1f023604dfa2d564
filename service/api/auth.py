"""Bearer-key authentication for the API (PROTOCOL §3 step 1)."""

from __future__ import annotations

import time

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


class KeyCache:
    """Recently seen keys, for the ingest hot path only.

    Safe because the commit re-checks, inside its transaction, that the key is
    not revoked: a revoked key never writes, whatever this cache holds. Reads
    always look the key up.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, tenants.KeyRow]] = {}

    def get(self, key_id: str) -> tenants.KeyRow | None:
        hit = self._rows.get(key_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, row: tenants.KeyRow) -> None:
        if len(self._rows) >= self._size:
            self._rows.clear()
        self._rows[row.key_id] = (time.monotonic() + self._ttl, row)


async def authenticate(
    runtime: Runtime, scope: Scope, cache: KeyCache | None = None
) -> Principal | Response:
    """The caller's principal, or the problem response that refuses it."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthenticated("send 'Authorization: Bearer <api key>'")
    parsed = parse_token(token.strip())
    if parsed is None:
        return unauthenticated("the API key is not in a known format")
    key_id, secret = parsed
    row = cache.get(key_id) if cache is not None else None
    if row is None:
        try:
            row = await tenants.find_key(runtime.db, key_id)
        except DatabaseUnavailable as exc:
            return unavailable(runtime, f"cannot check the API key: {exc}")
        if cache is not None and row is not None and row.revoked_at is None:
            cache.put(row)
    # The same answer for unknown, wrong and revoked keys: no oracle for guessing.
    if row is None or not secret_matches(secret, row.secret_hash) or row.revoked_at is not None:
        return unauthenticated("unknown or revoked API key")
    if scope not in row.scopes:
        return problem(403, "forbidden", f"this API key lacks the '{scope}' scope")
    return Principal(row.tenant_id, row.tenant, row.key_id, row.scopes)
