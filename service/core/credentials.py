"""API keys: their format, how they are hashed, and who they identify.

An API key reads `csk_<api_key_id>_<secret>`. The id finds the row; only SHA-256 of
the secret is stored (the secret is 256 random bits, so a slow hash buys
nothing), and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "csk"
_FORMAT = re.compile(r"^csk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"


@dataclass(frozen=True)
class NewApiKey:
    api_key_id: str
    secret_hash: bytes
    token: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, through one of its keys."""

    tenant_id: int
    tenant: str
    api_key_id: str
    scopes: frozenset[Scope]


def new_api_key() -> NewApiKey:
    api_key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(api_key_id, hash_secret(secret), f"{PREFIX}_{api_key_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a presented API key into (api_key_id, secret), or None if it is not one of ours."""
    match = _FORMAT.match(token)
    return (match[1], match[2]) if match else None


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
