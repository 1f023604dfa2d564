"""Seals (PROTOCOL §4) as receipts: a seal returned by the server is checked
(shape, hash, Ed25519 signature under a key of ``GET /v1/keys``) before any
event it covers counts as acknowledged. How it links to *our* chain (its
``prev_hash``, ``first_seq``, ``prev_seal``) is checked by the sender, which
knows the chain."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import canonical
from .bundle import key_id_of
from .records import SEAL_KIND, ZERO_HASH, hashed_bytes, is_hex64

_SEAL_MEMBERS = frozenset(
    ("hash", "kind", "payload", "prev_hash", "seq", "session_id", "signature", "ts")
)
_SEAL_PAYLOAD = frozenset(("first_seq", "key_id", "prev_seal"))


class SealError(ValueError):
    """A seal that does not verify; the message says what does not hold."""


@dataclass(frozen=True)
class Receipt:
    """A verified seal: the server's signed statement that events
    ``first_seq..seq`` of the session are stored, the last one with hash
    ``prev_hash``."""

    session_id: str
    seq: int
    first_seq: int
    hash: str
    prev_hash: str
    prev_seal: str
    key_id: str
    signature: str
    ts: str
    record: bytes
    """The seal's JCS line (without newline), as replay returns it."""


def parse_keys(body: Any) -> dict[str, bytes]:
    """``{"keys": [{key_id, alg, public_key}, ...]}`` -> key_id -> raw key; each
    key_id must be the one §4 derives from its key."""
    keys: dict[str, bytes] = {}
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise SealError('the key list is not {"keys": [...]}')
    for k in body["keys"]:
        if not isinstance(k, dict) or k.get("alg", "Ed25519") != "Ed25519":
            continue
        try:
            raw = bytes.fromhex(k["public_key"])
        except (KeyError, TypeError, ValueError):
            continue
        if len(raw) == 32 and key_id_of(raw) == k.get("key_id"):
            keys[key_id_of(raw)] = raw
    return keys


def check_signature(public_key: bytes, digest_hex: str, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            bytes.fromhex(signature_hex), bytes.fromhex(digest_hex)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def check_seal(seal: Any, session_id: str, public_keys: Mapping[str, bytes]) -> Receipt:
    """The seal's own checks: shape, recomputed hash, signature under its key_id.

    Raises SealError, or KeyError(key_id) when the key is not in `public_keys`
    (the caller refreshes its keys and tries again)."""
    if not isinstance(seal, dict) or set(seal) != _SEAL_MEMBERS:
        raise SealError("the seal does not have the eight members of PROTOCOL §4")
    payload = seal["payload"]
    if not isinstance(payload, dict) or set(payload) != _SEAL_PAYLOAD:
        raise SealError("the seal's payload is not {first_seq, key_id, prev_seal}")
    seq, first_seq = seal["seq"], payload["first_seq"]
    key_id, prev_seal = payload["key_id"], payload["prev_seal"]
    ts, signature = seal["ts"], seal["signature"]
    if seal["kind"] != SEAL_KIND or seal["session_id"] != session_id:
        raise SealError(
            f"not a seal of session {session_id} "
            f"(kind {seal['kind']!r}, session {seal['session_id']!r})"
        )
    if not (_is_seq(seq) and _is_seq(first_seq) and first_seq <= seq):
        raise SealError(f"bad seq/first_seq: {seq!r}/{first_seq!r}")
    if not (is_hex64(seal["prev_hash"]) and is_hex64(seal["hash"]) and is_hex64(prev_seal)):
        raise SealError("prev_hash, hash and prev_seal must be 64 lowercase hex chars")
    if not isinstance(key_id, str) or not isinstance(ts, str) or not isinstance(signature, str):
        raise SealError("key_id, ts and signature must be strings")
    payload_jcs = canonical.jcs(canonical.normalize(payload, "payload", 2))
    hashed = hashed_bytes(session_id, seq, SEAL_KIND, ts, payload_jcs, seal["prev_hash"])
    if canonical.sha256_hex(hashed) != seal["hash"]:
        raise SealError(
            f"the seal's hash does not match its content "
            f"(recomputed {canonical.sha256_hex(hashed)}, got {seal['hash']})"
        )
    if key_id not in public_keys:
        raise KeyError(key_id)
    if not check_signature(public_keys[key_id], seal["hash"], signature):
        raise SealError(f"the seal's signature does not verify under key {key_id}")
    record = canonical.jcs(canonical.normalize(seal, "seal", 1))
    return Receipt(
        session_id, seq, first_seq, seal["hash"], seal["prev_hash"], prev_seal, key_id,
        signature, ts, record,
    )  # fmt: skip


def _is_seq(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= canonical.MAX_SAFE_INTEGER


def first_prev_seal(anchor: Receipt | None) -> str:
    return anchor.hash if anchor is not None else ZERO_HASH


class KeyRing:
    """The server's seal keys, fetched with `fetch` (``GET /v1/keys``), cached,
    refetched whenever a seal names a key_id not in the cache (a key rotation)."""

    def __init__(self, fetch: Callable[[], dict[str, bytes]]) -> None:
        self._fetch = fetch
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def known(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._keys)

    def add(self, keys: Mapping[str, bytes]) -> None:
        with self._lock:
            self._keys.update(keys)

    def refresh(self) -> dict[str, bytes]:
        fetched = self._fetch()
        with self._lock:
            self._keys.update(fetched)
            return dict(self._keys)

    def verify(self, seal: Any, session_id: str) -> Receipt:
        """`check_seal`, refetching the keys once if the seal's key is unknown."""
        try:
            return check_seal(seal, session_id, self.known())
        except KeyError:
            pass
        try:
            return check_seal(seal, session_id, self.refresh())
        except KeyError as exc:
            raise SealError(
                f"the seal is signed with key {exc.args[0]!r}, which GET /v1/keys does not list"
            ) from None
