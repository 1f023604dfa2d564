"""agent_chain: record an AI agent's events as a hash chain that the ingestion
service seals, without ever losing one.

    from agent_chain import Client

    client = Client("http://127.0.0.1:8000", api_key)
    with client.session() as session:
        seq, digest = session.record("tool.call", {"tool": "search", "q": "Zürich"})
    client.flush(timeout=10)

`python -m agent_chain verify FILE` checks an evidence bundle or a journal offline.
"""

from .canonical import BACKEND
from .client import Client, Config, FlushReport, Session, SessionStatus, Status
from .errors import (
    AgentChainError,
    AuthError,
    ChainForkError,
    IntegrityError,
    InvalidEventError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    RejectedBatchError,
    SealVerificationError,
    SendError,
    ServerBusyError,
    SessionClosedError,
    SessionForkedError,
    SessionStoppedError,
    SessionUnusableError,
    TransportError,
)
from .receipts import Receipt

__all__ = [
    "BACKEND",
    "AgentChainError",
    "AuthError",
    "ChainForkError",
    "Client",
    "Config",
    "FlushReport",
    "IntegrityError",
    "InvalidEventError",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "Receipt",
    "RejectedBatchError",
    "SealVerificationError",
    "SendError",
    "ServerBusyError",
    "Session",
    "SessionClosedError",
    "SessionForkedError",
    "SessionStatus",
    "SessionStoppedError",
    "SessionUnusableError",
    "Status",
    "TransportError",
]
