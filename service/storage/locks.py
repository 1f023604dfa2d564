"""Advisory lock namespaces: the first argument of every `pg_advisory_xact_lock(ns, id)`.

Each namespace is a constant so that two features can never collide on a lock
id (the second argument, e.g. a hash of tenant and session).
"""

MIGRATIONS = 1
"""Serializes schema migrations across processes that start at the same time."""

SESSION_HEAD = 2
"""Serializes commits to one session's chain, across tasks, processes and hosts.
The lock id is derived from (tenant, session_id); the head row's FOR UPDATE is the
second line of defence, the lock makes waiters queue without deadlocking."""

SEAL_KEYS = 3
"""Serializes changes of the active signing key (start-up registration, rotation)."""
