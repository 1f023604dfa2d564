"""The evidence bundle's format (the service's docs/evidence-bundle.md).

One file: a JSON header line naming the session and the public keys that signed
its seals, then the session's records, one a line, exactly as replay returns
them. Written by the service's export, checked offline by `agent_chain.audit`. Imports
nothing but the standard library: the service uses this module too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

FORMAT = "agent-chain-evidence/1"

Progress = Callable[[int, int, int], None]
"""progress(records so far, units done, units in all): reading or writing a bundle."""


class BundleError(ValueError):
    """The header is not one this module writes."""


@dataclass(frozen=True)
class BundleKey:
    key_id: str
    public_key: bytes
    alg: str = "Ed25519"


@dataclass(frozen=True)
class BundleHeader:
    session_id: str
    tenant: str
    exported_at: str
    keys: tuple[BundleKey, ...]
    events: int
    seals: int
    head_hash: str

    def to_line(self) -> bytes:
        body = {
            "format": FORMAT,
            "session_id": self.session_id,
            "tenant": self.tenant,
            "exported_at": self.exported_at,
            "keys": [
                {"key_id": k.key_id, "alg": k.alg, "public_key": k.public_key.hex()}
                for k in self.keys
            ],
            "events": self.events,
            "seals": self.seals,
            "head_hash": self.head_hash,
        }
        return json.dumps(body, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> BundleHeader:
        try:
            raw = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"the first line is not a JSON header ({exc})") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f'the first line is not a header with "format": "{FORMAT}"')
        try:
            keys = tuple(
                BundleKey(_str(k, "key_id"), bytes.fromhex(_str(k, "public_key")), _str(k, "alg"))
                for k in raw["keys"]
            )
            return cls(
                session_id=_str(raw, "session_id"),
                tenant=_str(raw, "tenant"),
                exported_at=_str(raw, "exported_at"),
                keys=keys,
                events=_count(raw, "events"),
                seals=_count(raw, "seals"),
                head_hash=_str(raw, "head_hash"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"the header is incomplete or malformed ({exc})") from exc


def _str(obj: Any, name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise TypeError(f"'{name}' must be a string")
    return value


def _count(obj: Any, name: str) -> int:
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"'{name}' must be a non-negative integer")
    return value


def key_id_of(public_key: bytes) -> str:
    """PROTOCOL §4: the first 16 hex chars of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class BundleWriter:
    """Writes a bundle: the header, then records as they are read from storage."""

    def __init__(self, out: IO[bytes], header: BundleHeader) -> None:
        self._out = out
        self.records = 0
        out.write(header.to_line())

    def write(self, records: list[bytes]) -> None:
        self._out.write(b"".join(r + b"\n" for r in records))
        self.records += len(records)
