"""What can come of a batch once it is verified: returned values, not exceptions.

The API maps each to a status with an exhaustive `match` (api/ingest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ZERO_HASH = "0" * 64


@dataclass(frozen=True)
class Appended:
    """Stored: the new events, their seal and the new head, in one transaction.

    `accepted == 0` means the batch was made only of retries: nothing was written
    and `seal` is the stored seal that covers its last event.
    """

    session_id: str
    accepted: int
    duplicates: int
    head_seq: int
    head_hash: str
    seal: bytes

    @property
    def duplicate(self) -> bool:
        return self.accepted == 0


@dataclass(frozen=True)
class Conflict:
    """The batch does not continue the stored chain (409); nothing was written."""

    code: Literal["seq_gap", "chain_fork"]
    next_seq: int
    head_hash: str
    detail: str
    index: int | None = None


@dataclass(frozen=True)
class Overloaded:
    """The session's inbox or the process's pending work is full (429)."""

    reason: str


@dataclass(frozen=True)
class Unavailable:
    """The database is unreachable or too slow (503). Usually nothing was stored;
    a commit already sent when its deadline passed may still land: either way a
    retry is safe (answered duplicate if it did)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """A bug, not a condition: logged with its traceback (500); nothing was stored."""


@dataclass(frozen=True)
class KeyRevoked:
    """The key was revoked between authentication and commit (401)."""


Outcome = Appended | Conflict | Overloaded | Unavailable | KeyRevoked | Failed
