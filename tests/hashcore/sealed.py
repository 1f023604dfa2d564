"""Sealed chains built WITH hashcore (verify_batch + Signer.seal): inputs for the
chain verifier's tests, not an oracle (tests/chain.py is the independent one)."""

from __future__ import annotations

import hashcore

from ..chain import SEAL_TS, SID, ZERO, body_of, make_events


def make_chain(signer: hashcore.Signer, sizes: list[int], *, sid: str = SID) -> list[bytes]:
    """Replay lines of a chain: batches of the given sizes, each followed by its seal
    (the records come from hashcore, the events from the oracle)."""
    lines: list[bytes] = []
    prev, prev_seal, first = ZERO, ZERO, 0
    for n in sizes:
        events = make_events(first, n, prev, sid=sid)
        batch = hashcore.verify_batch(body_of(events, ensure_ascii=False), 1000)
        lines.extend(batch.records)
        prev = batch.last_hash
        seal = signer.seal(sid, batch.last_seq, first, prev_seal, prev, SEAL_TS)
        lines.append(seal.record)
        prev_seal = seal.hash
        first += n
    return lines
