"""Advisory lock namespaces: the first key of every `pg_advisory_xact_lock(ns, key)`.

Each namespace is a constant so that two features can never collide on a key.
"""

MIGRATIONS = 1
"""Serializes schema migrations across processes that start at the same time."""

SESSION_HEAD = 2
"""Serializes commits to one session's chain, across tasks, processes and hosts.
The key is derived from (tenant, session_id); the head row's FOR UPDATE is the
second line of defence, the lock makes waiters queue without deadlocking."""

SEAL_KEYS = 3
"""Serializes changes of the active signing key (start-up registration, rotation)."""
