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
from .problems import Reply, problem_reply, unauthenticated

P = ParamSpec("P")


class ApiKeyCache:
    """Recently looked-up API key ids, for the ingest hot path only: the row, or
    that there is none (so that an unknown id costs what a known one does, and
    gives no timing oracle for which ids exist).

    Safe because the commit re-checks, inside its transaction, that the key is
    not revoked: a revoked key never writes, whatever this cache holds. Reads
    always look the key up.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, tenants.ApiKeyRow | None]] = {}

    def get(self, api_key_id: str) -> tuple[bool, tenants.ApiKeyRow | None]:
        """(cached, row): a cached None means the id is known not to exist."""
        hit = self._rows.get(api_key_id)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, api_key_id: str, row: tenants.ApiKeyRow | None) -> None:
        if len(self._rows) >= self._size:
            self._rows.clear()
        self._rows[api_key_id] = (time.monotonic() + self._ttl, row)


# Compared against when the key id is unknown, so that both answers cost the same.
_NO_SECRET_HASH = bytes(32)


async def authenticate(
    runtime: Runtime, scope: Scope, authorization: str, cache: ApiKeyCache | None = None
) -> Principal | Reply:
    """The caller's principal, from its `Authorization` header, or the problem
    that refuses it. (Shared by the Quart routes and the ingest fast path.)

    A database outage raises `DatabaseUnavailable` (answered 503)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return unauthenticated("send 'Authorization: Bearer <api key>'")
    parsed = parse_token(token.strip())
    if parsed is None:
        return unauthenticated("the API key is not in a known format")
    api_key_id, secret = parsed
    cached, row = cache.get(api_key_id) if cache is not None else (False, None)
    if not cached:
        row = await tenants.find_api_key(runtime.db, api_key_id)
        if cache is not None and (row is None or row.revoked_at is None):
            cache.put(api_key_id, row)
    matches = secret_matches(secret, row.secret_hash if row else _NO_SECRET_HASH)
    # The same answer for unknown, wrong and revoked keys: no oracle for guessing.
    if row is None or not matches or row.revoked_at is not None:
        return unauthenticated("unknown or revoked API key")
    if scope not in row.scopes:
        return problem_reply(403, "forbidden", f"this API key lacks the '{scope}' scope")
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
            authorization = request.headers.get("Authorization", "")
            principal = await authenticate(runtime, scope, authorization, cache)
            if isinstance(principal, Reply):
                return principal.response()
            return await handler(principal, *args, **kwargs)

        return authenticated

    return decorate
