"""Bearer API-key authentication for the API (PROTOCOL §3 step 1), as a decorator
that hands the handler the caller's `Principal`."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec

from quart import Response, request

from ..core.credentials import Principal, Scope, parse_token, secret_matches
from ..runtime import Runtime
from ..storage import tenants
from .problems import problem, unauthenticated

P = ParamSpec("P")


class ApiKeyCache:
    """Recently seen API keys, for the ingest hot path only.

    Safe because the commit re-checks, inside its transaction, that the key is
    not revoked: a revoked key never writes, whatever this cache holds. Reads
    always look the key up.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, tenants.ApiKeyRow]] = {}

    def get(self, api_key_id: str) -> tenants.ApiKeyRow | None:
        hit = self._rows.get(api_key_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, row: tenants.ApiKeyRow) -> None:
        if len(self._rows) >= self._size:
            self._rows.clear()
        self._rows[row.api_key_id] = (time.monotonic() + self._ttl, row)


async def authenticate(
    runtime: Runtime, scope: Scope, cache: ApiKeyCache | None = None
) -> Principal | Response:
    """The caller's principal, or the problem response that refuses it.

    A database outage raises `DatabaseUnavailable` (the app answers 503)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthenticated("send 'Authorization: Bearer <api key>'")
    parsed = parse_token(token.strip())
    if parsed is None:
        return unauthenticated("the API key is not in a known format")
    api_key_id, secret = parsed
    row = cache.get(api_key_id) if cache is not None else None
    if row is None:
        row = await tenants.find_api_key(runtime.db, api_key_id)
        if cache is not None and row is not None and row.revoked_at is None:
            cache.put(row)
    # The same answer for unknown, wrong and revoked keys: no oracle for guessing.
    if row is None or not secret_matches(secret, row.secret_hash) or row.revoked_at is not None:
        return unauthenticated("unknown or revoked API key")
    if scope not in row.scopes:
        return problem(403, "forbidden", f"this API key lacks the '{scope}' scope")
    scopes = frozenset(Scope(s) for s in row.scopes)
    return Principal(row.tenant_id, row.tenant, row.api_key_id, scopes)


def requires(
    runtime: Runtime, scope: Scope, cache: ApiKeyCache | None = None
) -> Callable[
    [Callable[Concatenate[Principal, P], Awaitable[Response]]], Callable[P, Awaitable[Response]]
]:
    """Route decorator: authenticate with `scope`, then call the handler with the
    `Principal` first; a refusal is answered without calling it."""

    def decorate(
        handler: Callable[Concatenate[Principal, P], Awaitable[Response]],
    ) -> Callable[P, Awaitable[Response]]:
        @functools.wraps(handler)
        async def authenticated(*args: P.args, **kwargs: P.kwargs) -> Response:
            principal = await authenticate(runtime, scope, cache)
            if isinstance(principal, Response):
                return principal
            return await handler(principal, *args, **kwargs)

        return authenticated

    return decorate
