"""Export: a session's evidence bundle, written from storage. The format (and the
offline check) belong to the client package, `agent_chain.bundle` / `.audit`:
auditors need nothing of the server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import IO

from agent_chain.bundle import BundleHeader, BundleKey, BundleWriter, Progress

from ..storage import sessions
from ..storage.database import Database

log = logging.getLogger(__name__)

_EXPORT_CHUNK = 5000
_EXPORT_MAX_BYTES = 16 * 1024 * 1024


async def export(
    db: Database,
    session_id: str,
    tenant: str | None,
    out: IO[bytes],
    progress: Progress,
) -> BundleHeader | str:
    """Write the session's bundle to `out`: its header, or why there is none.

    Reads the head, then the chain up to that head through a cursor in chunks,
    so memory does not grow with the session's length."""
    holders = await sessions.tenants_holding(db, session_id)
    chosen = [h for h in holders if tenant is None or h[1] == tenant]
    if not chosen:
        under = f" under tenant {tenant}" if tenant else ""
        return f"no session {session_id}{under}"
    if len(chosen) > 1:
        names = ", ".join(name for _, name in chosen)
        return f"session {session_id} exists under several tenants ({names}): pass --tenant"
    tenant_id, tenant_name = chosen[0]
    head = await sessions.head(db, tenant_id, session_id)
    if head is None:
        return f"no session {session_id} under tenant {tenant_name}"
    keys, missing = await sessions.seal_keys(db, tenant_id, session_id, head.next_seq)
    if missing:
        log.warning("no public key stored for %s: its seals will not verify", ", ".join(missing))
    header = BundleHeader(
        session_id=session_id,
        tenant=tenant_name,
        exported_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        keys=tuple(BundleKey(k.key_id, k.public_key) for k in keys),
        events=head.next_seq,
        seals=head.seal_count,
        head_hash=head.head_hash,
    )
    total = head.next_seq + head.seal_count
    writer = BundleWriter(out, header)
    async with db.records(
        sessions.CHAIN,
        tenant_id,
        session_id,
        head.next_seq,
        by_key=sessions.BY_KEY,
        chunk=_EXPORT_CHUNK,
        max_bytes=_EXPORT_MAX_BYTES,
    ) as fetch:
        while records := await fetch():
            writer.write(records)
            progress(writer.records, writer.records, total)
    if writer.records != total:
        return f"read {writer.records} records where the head announces {total}"
    return header
