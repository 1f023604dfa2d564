"""Settings, read once from the environment (the CLI writes its flags there too,
so that every hypercorn worker process sees the same values)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .storage.database import PoolSettings, max_streams

MiB = 1024 * 1024


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    seal_key_file: Path | None = None
    # PROTOCOL §3 limits.
    max_body_bytes: int = 8 * MiB
    max_batch_events: int = 1000
    # Request-body bytes one worker holds at once (read, verified or committed).
    max_inflight_bytes: int = 64 * MiB
    # Database.
    pool_size: int = 8
    db_deadline: float = 10.0
    # Group commit (core.group_commit): tasks writing fast-path batches, and
    # how many batches (and bytes of records) one statement may carry. One
    # writer per worker: what arrives during its write waits for it and goes in
    # the next group (fewer statements and WAL flushes; see docs/performance.md).
    group_writers: int = 1
    group_max_batches: int = 16
    group_max_bytes: int = 4 * MiB
    # Session actors: a small inbox each, and a cap on batches waiting process-wide.
    inbox_size: int = 8
    max_pending: int = 512
    actor_idle_seconds: float = 30.0
    # An actor whose inbox is empty waits this long for its session's next batch.
    actor_linger_seconds: float = 0.25
    # Threads that run hashcore off the event loop.
    verify_threads: int = 2
    # Ingest trusts a key it looked up this recently (the commit re-checks revocation).
    key_cache_seconds: float = 10.0
    retry_after_seconds: int = 1
    # How often a server checks whether `keys rotate-seal` made another key active.
    seal_key_poll_seconds: float = 2.0
    # Replay (and /verify): records per read, and bytes per read (but for its
    # last record) whatever the records' size.
    replay_chunk: int = 2000
    replay_max_bytes: int = 4 * MiB

    def __post_init__(self) -> None:
        if self.group_writers < 1:
            raise ValueError(f"CHAIN_GROUP_WRITERS must be at least 1, not {self.group_writers}")
        reads = max_streams(self.pool_size)
        spare = self.pool_size - reads - 1
        if self.group_writers > spare:
            # Each writer keeps a connection: with the long reads' share taken as
            # well, the other commits and key lookups would wait for a read to end.
            raise ValueError(
                f"CHAIN_GROUP_WRITERS ({self.group_writers}) is too many for "
                f"CHAIN_POOL_SIZE ({self.pool_size}): each group-commit writer keeps "
                f"a connection, long reads may hold {reads}, and the other commits "
                f"and key lookups need at least one more: at most {max(spare, 0)} "
                "writers, or a larger pool"
            )

    @property
    def pool(self) -> PoolSettings:
        return PoolSettings(self.database_url, max_size=self.pool_size, deadline=self.db_deadline)

    @classmethod
    def from_env(cls) -> Settings:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise RuntimeError(
                "DATABASE_URL is not set (the CLI sets it when it starts PostgreSQL)"
            )
        data_dir = Path(os.environ.get("CHAIN_DATA_DIR", ".data"))
        key_file = os.environ.get("SEAL_KEY_FILE")
        return cls(
            database_url=url,
            data_dir=data_dir,
            seal_key_file=Path(key_file) if key_file else None,
            max_body_bytes=_int("CHAIN_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch_events=_int("CHAIN_MAX_BATCH_EVENTS", cls.max_batch_events),
            max_inflight_bytes=_int("CHAIN_MAX_INFLIGHT_BYTES", cls.max_inflight_bytes),
            pool_size=_int("CHAIN_POOL_SIZE", cls.pool_size),
            db_deadline=_float("CHAIN_DB_DEADLINE", cls.db_deadline),
            group_writers=_int("CHAIN_GROUP_WRITERS", cls.group_writers),
            group_max_batches=_int("CHAIN_GROUP_MAX_BATCHES", cls.group_max_batches),
            group_max_bytes=_int("CHAIN_GROUP_MAX_BYTES", cls.group_max_bytes),
            inbox_size=_int("CHAIN_INBOX_SIZE", cls.inbox_size),
            max_pending=_int("CHAIN_MAX_PENDING", cls.max_pending),
            actor_idle_seconds=_float("CHAIN_ACTOR_IDLE_SECONDS", cls.actor_idle_seconds),
            actor_linger_seconds=_float("CHAIN_ACTOR_LINGER_SECONDS", cls.actor_linger_seconds),
            verify_threads=_int("CHAIN_VERIFY_THREADS", cls.verify_threads),
            key_cache_seconds=_float("CHAIN_KEY_CACHE_SECONDS", cls.key_cache_seconds),
            replay_chunk=_int("CHAIN_REPLAY_CHUNK", cls.replay_chunk),
            replay_max_bytes=_int("CHAIN_REPLAY_MAX_BYTES", cls.replay_max_bytes),
            seal_key_poll_seconds=_float("CHAIN_SEAL_KEY_POLL_SECONDS", cls.seal_key_poll_seconds),
        )

    def key_file(self) -> Path:
        return self.seal_key_file or (self.data_dir / "seal_key.pem")
