"""Every exception the package raises or reports, under one base class."""

from __future__ import annotations


class AgentChainError(Exception):
    """Base class of every error of this package."""


# ---- raised at the call site of `record` -------------------------------------


class InvalidEventError(AgentChainError, ValueError):
    """The event would be refused by the server (PROTOCOL §1, §2); nothing was recorded.

    `rule` is one of: kind, reserved_kind, payload_type, non_string_key,
    lone_surrogate, not_finite, integer_range, depth, too_large.
    `path` says where, e.g. ``payload.messages[2].content``.
    """

    def __init__(self, rule: str, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.rule = rule
        self.path = path


class SessionUnusableError(AgentChainError, RuntimeError):
    """The session cannot record any more: closed, stopped by the server's
    answer, or inherited across `fork()`."""


class SessionClosedError(SessionUnusableError):
    """`record` on a closed session."""


class SessionForkedError(SessionUnusableError):
    """`record` in a forked child on a session its parent opened."""


class SessionStoppedError(SessionUnusableError):
    """The session was stopped (chain fork, quarantine, integrity error); its
    journal is kept. `reason` is the error that stopped it."""

    def __init__(self, message: str, reason: AgentChainError | None) -> None:
        super().__init__(message)
        self.reason = reason


class JournalError(AgentChainError, OSError):
    """The local journal cannot be used."""


class JournalLockedError(JournalError):
    """Another live writer (process or client) holds this session's journal."""


class JournalCorruptError(JournalError):
    """A journal line other than a torn last one does not hold."""


class JournalFullError(JournalError):
    """The journal's cap on unacknowledged bytes was reached and stayed reached
    for the configured timeout. Nothing was recorded; nothing was dropped."""


# ---- reported by the sender (`on_error`, `status()`) ---------------------------


class SendError(AgentChainError):
    """Something went wrong sending a session's events; `session_id` names it."""

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.status = status
        self.code = code


class TransportError(SendError):
    """No answer (connection refused, reset, timeout); the batch is retried."""


class ServerBusyError(SendError):
    """429 or 503 (or another 5xx); the batch is retried when the server says."""


class AuthError(SendError):
    """401 or 403: the key is missing, unknown, revoked or lacks the scope.
    Retried with backoff; events keep being journaled."""


class RejectedBatchError(SendError):
    """400, 413 or 415: the server refused the batch. The session is
    quarantined: its journal is kept, nothing more is sent."""


class ChainForkError(SendError):
    """409 chain_fork: the server holds another chain for this session. The
    session is stopped and its journal kept."""


class IntegrityError(SendError):
    """The server's answers contradict what it sealed before (e.g. its head is
    below a seal this client verified: it lost sealed data). The session is stopped."""


class SealVerificationError(SendError):
    """A seal did not verify (hash, link, coverage or signature): never an
    acknowledgement. The session is stopped."""
