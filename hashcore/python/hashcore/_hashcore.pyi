"""Type stubs for the native module `hashcore._hashcore`."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Self, final

__all__ = [
    "BATCH_ERROR_CODES",
    "CHAIN_PROBLEM_REASONS",
    "Batch",
    "BatchError",
    "ChainReport",
    "ChainVerifier",
    "JsonRuleError",
    "Problem",
    "Seal",
    "Signer",
    "canonicalize",
    "sha256_hex",
    "verify_batch",
    "verify_chain",
]

BATCH_ERROR_CODES: Final[tuple[str, ...]]
"""Every value ``BatchError.code`` can take, in PROTOCOL §3 order."""
CHAIN_PROBLEM_REASONS: Final[tuple[str, ...]]
"""Every value ``Problem.reason`` can take."""

class JsonRuleError(ValueError):
    """A JSON text broke a rule of PROTOCOL §2."""

    rule: str
    """One of: malformed_json, utf8, lone_surrogate, duplicate_key,
    number_overflow, integer_range, depth."""
    path: str
    """Where, e.g. ``$.events[3].payload.a``."""

class BatchError(ValueError):
    """An ingest batch was rejected."""

    code: str
    """One of ``BATCH_ERROR_CODES``."""
    index: int | None
    member: str | None
    detail: str
    expected: str | None
    got: str | None

def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""

def canonicalize(data: bytes) -> bytes:
    """JSON text -> RFC 8785 bytes. Raises JsonRuleError."""

@final
class Batch:
    """A batch that passed every check that needs no stored state."""

    @property
    def session_id(self) -> str: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def first_prev_hash(self) -> str: ...
    @property
    def last_hash(self) -> str: ...
    @property
    def seqs(self) -> list[int]: ...
    @property
    def kinds(self) -> list[str]: ...
    @property
    def ts(self) -> list[str]: ...
    @property
    def hashes(self) -> list[str]: ...
    @property
    def records(self) -> list[bytes]:
        """Per event: JCS bytes of the whole event, including ``hash``."""
    def __len__(self) -> int: ...

def verify_batch(body: bytes, max_events: int) -> Batch:
    """Parses and checks ``{"events": [...]}``. Raises BatchError."""

@final
class Seal:
    """A signed seal record (PROTOCOL §4)."""

    @property
    def record(self) -> bytes:
        """JCS bytes of all eight members, including ``hash`` and ``signature``."""
    @property
    def hash(self) -> str: ...
    @property
    def signature(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def ts(self) -> str: ...

@final
class Signer:
    """An Ed25519 seal signer."""

    def __new__(cls, seed: bytes) -> Self:
        """From a 32-byte Ed25519 seed; ValueError otherwise."""
    @staticmethod
    def from_pem(pem: bytes) -> Signer:
        """From a PKCS#8 PEM private key; ValueError otherwise."""
    def to_pem(self) -> bytes:
        """PKCS#8 PEM of the private key."""
    @property
    def key_id(self) -> str:
        """First 16 hex chars of SHA-256 of the raw public key."""
    @property
    def public_key(self) -> bytes:
        """Raw 32-byte public key."""
    def seal(
        self,
        session_id: str,
        seq: int,
        first_seq: int,
        prev_seal: str,
        head_hash: str,
        ts: str,
    ) -> Seal:
        """Builds and signs the seal of events ``first_seq..=seq``; ValueError on bad arguments."""

@final
class Problem:
    """The first problem found in a chain."""

    @property
    def line(self) -> int:
        """1-based index of the record in the stream (0: the stream as a whole)."""
    @property
    def seq(self) -> int | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def reason(self) -> str:
        """One of ``CHAIN_PROBLEM_REASONS``."""
    @property
    def detail(self) -> str: ...
    @property
    def expected(self) -> str | None: ...
    @property
    def found(self) -> str | None: ...

@final
class ChainReport:
    """The outcome of a chain check."""

    @property
    def ok(self) -> bool: ...
    @property
    def records(self) -> int: ...
    @property
    def events(self) -> int: ...
    @property
    def seals(self) -> int: ...
    @property
    def keys_used(self) -> list[str]: ...
    @property
    def problem(self) -> Problem | None: ...

@final
class ChainVerifier:
    """The streaming auditor check of PROTOCOL §6."""

    def __new__(cls, public_keys: Mapping[str, bytes]) -> Self:
        """``public_keys``: key_id -> raw 32-byte Ed25519 public key."""
    def feed(self, records: Sequence[bytes]) -> None:
        """Each item is one record's JSON text (a replay line without newline)."""
    def feed_ndjson(self, chunk: bytes) -> None:
        """Complete newline-separated lines; empty lines are ignored."""
    def finish(self) -> ChainReport:
        """Checks the end conditions and reports."""
    @property
    def records(self) -> int:
        """Records fed so far."""

def verify_chain(records: Iterable[bytes], public_keys: Mapping[str, bytes]) -> ChainReport:
    """Streams ``records`` through a ChainVerifier and finishes it."""
