"""Reading chains back (PROTOCOL §5): replay, head, listing, server-side verification."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import trio
from agent_chain import audit
from quart import Blueprint, Response, request

import hashcore

from ..core.credentials import Principal, Scope
from ..runtime import Runtime
from ..storage import seal_keys, sessions
from .auth import requires
from .problems import problem
from .responses import json_response

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# ASCII digits only (str.isdigit() also takes '²' or '١', which int() refuses),
# and few enough of them: 2**53 - 1 has 16.
_DIGITS = re.compile(r"[0-9]{1,16}")
NDJSON = "application/x-ndjson"
MAX_LIST = 500
MAX_SEQ = 2**53 - 1
# A cursor this API writes is ~90 characters of unpadded base64url.
_MAX_CURSOR = 256
_CURSOR = re.compile(rf"[A-Za-z0-9_-]{{1,{_MAX_CURSOR}}}")


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | Response | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        return problem(
            400, "bad_parameter", f"'{name}' must be an integer in {low}..{high}", parameter=name
        )
    return int(raw)


def _encode_cursor(created_at: datetime, session_id: str) -> str:
    raw = f"{created_at.isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str] | None:
    """The keyset a cursor names, or None if it is not one this API wrote."""
    # Only the alphabet: b64decode would skip any other character (and accept padding).
    if not _CURSOR.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        stamp, session_id = raw.split("|")
        if not _UUID.match(session_id):
            return None
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            return None
        # In UTC, as the database compares it: year 1 at +14:00 leaves the range.
        return created_at.astimezone(UTC), session_id
    except (ValueError, OverflowError):
        return None


def routes(runtime: Runtime) -> Blueprint:
    bp = Blueprint("sessions", __name__)
    settings = runtime.settings

    reader = requires(runtime, Scope.READ)

    def not_found() -> Response:
        return problem(404, "not_found", "no such session for this tenant")

    async def find_head(principal: Principal, session_id: str) -> sessions.SessionHead | None:
        if not _UUID.match(session_id):
            return None
        return await sessions.head(runtime.db, principal.tenant_id, session_id)

    @bp.get("/v1/sessions/<session_id>/records")
    @reader
    async def replay(principal: Principal, session_id: str) -> Response:
        if not _UUID.match(session_id):
            return not_found()
        from_seq = _int_arg("from_seq", 0, 0, MAX_SEQ)
        limit = _int_arg("limit", None, 1, MAX_SEQ)
        if isinstance(from_seq, Response):
            return from_seq
        if isinstance(limit, Response):
            return limit
        if await find_head(principal, session_id) is None:
            return not_found()

        async def lines() -> AsyncIterator[bytes]:
            async with runtime.db.records(
                sessions.REPLAY,
                principal.tenant_id,
                session_id,
                from_seq,
                limit,
                by_key=sessions.BY_KEY,
                chunk=settings.replay_chunk,
                max_bytes=settings.replay_max_bytes,
            ) as fetch:
                while records := await fetch():
                    records.append(b"")  # a newline after the last one too
                    yield b"\n".join(records)

        return Response(lines(), content_type=NDJSON)

    @bp.get("/v1/sessions/<session_id>")
    @reader
    async def head(principal: Principal, session_id: str) -> Response:
        found = await find_head(principal, session_id)
        if found is None:
            return not_found()
        return json_response(
            {
                **_summary_json(found),
                "next_seq": found.next_seq,
                "head_hash": found.head_hash,
                "updated_at": found.updated_at.isoformat(),
            },
            raw={"last_seal": found.last_seal_record or b"null"},
        )

    @bp.get("/v1/sessions")
    @reader
    async def listing(principal: Principal) -> Response:
        limit = _int_arg("limit", 50, 1, MAX_LIST)
        if isinstance(limit, Response):
            return limit
        assert limit is not None
        after = None
        if token := request.args.get("cursor"):
            after = _decode_cursor(token)
            if after is None:
                return problem(
                    400,
                    "bad_parameter",
                    "'cursor' is not a cursor this API returned",
                    parameter="cursor",
                )
        page = await sessions.newest(runtime.db, principal.tenant_id, limit, after)
        last = page[-1] if len(page) == limit else None
        return json_response(
            {
                "sessions": [_summary_json(s) for s in page],
                "next_cursor": _encode_cursor(last.created_at, last.session_id) if last else None,
            }
        )

    @bp.get("/v1/sessions/<session_id>/verify")
    @reader
    async def verify(principal: Principal, session_id: str) -> Response:
        found = await find_head(principal, session_id)
        if found is None:
            return not_found()
        keys = {k.key_id: k.public_key for k in await seal_keys.all_seal_keys(runtime.db)}
        verifier = hashcore.ChainVerifier(keys)
        last = b""
        async with runtime.db.records(
            sessions.CHAIN,
            principal.tenant_id,
            session_id,
            found.next_seq,
            by_key=sessions.BY_KEY,
            chunk=settings.replay_chunk,
            max_bytes=settings.replay_max_bytes,
        ) as fetch:
            while records := await fetch():
                await trio.to_thread.run_sync(
                    verifier.feed, records, limiter=runtime.verify_limiter
                )
                last = records[-1]
        report = verifier.finish()
        return json_response(report_json(session_id, report, found, last))

    return bp


def _summary_json(s: sessions.SessionSummary | sessions.SessionHead) -> dict[str, object]:
    """What the listing shows of a session (its head shows more)."""
    return {
        "session_id": s.session_id,
        "events": s.next_seq,
        "seals": s.seal_count,
        "first_event_ts": s.first_ts,
        "last_event_ts": s.last_ts,
        "created_at": s.created_at.isoformat(),
    }


def report_json(
    session_id: str, report: hashcore.ChainReport, head: sessions.SessionHead, last: bytes
) -> dict[str, object]:
    failure: audit.Failure | None = None
    if report.problem is not None:
        p = report.problem
        failure = audit.Failure(
            p.line, p.reason, p.detail, p.seq, p.kind, expected=p.expected, found=p.found
        )
    else:
        # A chain that lost its last batches still verifies; the head row says so.
        failure = audit.check_head(report, head.next_seq, head.seal_count, head.head_hash, last)
    problem_ = None
    if failure is not None:
        problem_ = {
            "line": failure.line,
            "seq": failure.seq,
            "kind": failure.kind,
            "reason": failure.reason,
            "detail": failure.detail,
            "expected": failure.expected,
            "found": failure.found,
        }
    return {
        "session_id": session_id,
        "ok": problem_ is None,
        "records": report.records,
        "events": report.events,
        "seals": report.seals,
        "keys_used": report.keys_used,
        "problem": problem_,
    }
