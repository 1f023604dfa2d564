"""POST /v1/ingest (PROTOCOL §3): check, verify off the loop, hand to the actor, map."""

from __future__ import annotations

from typing import assert_never

import trio
from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

import hashcore

from ..core.commit import Submission
from ..core.credentials import Principal, Scope
from ..core.outcomes import Appended, Conflict, Failed, KeyRevoked, Overloaded, Unavailable
from ..runtime import Runtime
from .auth import ApiKeyCache, requires
from .metrics import Metrics
from .problems import problem, unauthenticated, unavailable
from .responses import json_response

# Below this size hashcore keeps the GIL and finishes in microseconds: a thread
# hand-off would cost more than the work.
_INLINE_BYTES = 16 * 1024


def routes(runtime: Runtime, metrics: Metrics) -> Blueprint:
    bp = Blueprint("ingest", __name__)
    settings = runtime.settings
    api_keys = ApiKeyCache(ttl=settings.key_cache_seconds)

    async def verify(body: bytes) -> hashcore.Batch:
        if len(body) <= _INLINE_BYTES:
            return hashcore.verify_batch(body, settings.max_batch_events)
        return await trio.to_thread.run_sync(
            hashcore.verify_batch, body, settings.max_batch_events, limiter=runtime.verify_limiter
        )

    @bp.post("/v1/ingest")
    @requires(runtime, Scope.INGEST, api_keys)
    async def ingest(principal: Principal) -> Response:
        charset = request.mimetype_params.get("charset", "utf-8").lower()
        if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
            return problem(
                415,
                "unsupported_media_type",
                "send 'Content-Type: application/json' (UTF-8), not "
                f"'{request.content_type or 'nothing'}'",
            )
        try:
            body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        except RequestEntityTooLarge:
            return problem(413, "too_large", f"the body is over {settings.max_body_bytes} bytes")
        try:
            batch = await verify(body)
        except hashcore.BatchError as err:
            status = 413 if err.code == "too_large" else 400
            return problem(
                status,
                err.code,
                err.detail,
                index=err.index,
                member=err.member,
                expected=err.expected,
                got=err.got,
            )

        with metrics.batch_seconds.time():
            outcome = await runtime.actors.submit(
                (principal.tenant_id, batch.session_id),
                Submission(principal.tenant_id, principal.api_key_id, batch),
            )
        match outcome:
            case Appended():
                metrics.events_accepted.inc(outcome.accepted)
                metrics.batches.labels("duplicate" if outcome.duplicate else "appended").inc()
                return json_response(
                    {
                        "session_id": outcome.session_id,
                        "accepted": outcome.accepted,
                        "duplicates": outcome.duplicates,
                        "duplicate": outcome.duplicate,
                        "head": {"seq": outcome.head_seq, "hash": outcome.head_hash},
                    },
                    raw={"seal": outcome.seal},
                )
            case Conflict():
                return problem(
                    409,
                    outcome.code,
                    outcome.detail,
                    next_seq=outcome.next_seq,
                    head_hash=outcome.head_hash,
                    index=outcome.index,
                )
            case Overloaded():
                return problem(
                    429,
                    "overloaded",
                    outcome.reason,
                    headers={"Retry-After": str(settings.retry_after_seconds)},
                )
            case Unavailable():
                return unavailable(
                    f"{outcome.reason}; nothing was stored", settings.retry_after_seconds
                )
            case KeyRevoked():
                return unauthenticated("the API key was revoked")
            case Failed():
                return problem(500, "internal", "an internal error occurred; nothing was stored")
        assert_never(outcome)

    return bp
