"""The long-lived parts of one server process, and their lifecycle.

Started with `app.nursery.start(runtime.run)` from `before_serving`: it opens
the database (owning the trio-asyncio loop for its whole life), loads the seal
key, and runs the session actors in its own nursery. Readiness (migrations
applied, seal key registered) is reached in the background and retried, so a
server started while its database is down recovers by itself.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import trio

import hashcore

from .config import Settings
from .core import seal_key
from .core.actors import SessionActors
from .core.commit import ChainHead, Submission, append_batch
from .core.group_commit import GroupCommit
from .core.outcomes import Outcome, Unavailable
from .storage import citus, migrations, seal_keys
from .storage.database import Database, DatabaseUnavailable, open_database

log = logging.getLogger(__name__)

_GC_YOUNG_THRESHOLD = 20_000


def tune_gc_for_serving() -> None:
    """Before serving: move everything imported and built at start-up out of the
    collector's sight, and collect the young generation less often. A request
    allocates thousands of short-lived objects; with the default threshold (700)
    the collector kept re-walking the start-up heap (measured 1.06x on ingest).
    Reference counting still frees everything at once; only cycles wait longer."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, second, third)


def utc_now() -> str:
    """Server time for seals: RFC 3339 UTC with microseconds (PROTOCOL §4)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def prepare_storage(db: Database, signer: hashcore.Signer) -> None:
    """What a server needs before its first commit: the schema current, and its
    seal key's public half recorded (kept inactive if another key is active)."""
    await migrations.migrate(db)
    await seal_keys.register(db, signer.key_id, signer.public_key, activate=False)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer: hashcore.Signer = seal_key.load_or_create(settings.key_file())
        self.verify_limiter = trio.CapacityLimiter(settings.verify_threads)
        self.ready = False
        self._db: Database | None = None
        self._actors: SessionActors[Submission, ChainHead] | None = None
        self._group: GroupCommit | None = None
        self._stop = trio.Event()
        self._stopped = trio.Event()

    @property
    def db(self) -> Database:
        if self._db is None:
            raise DatabaseUnavailable("the database is not open yet")
        return self._db

    @property
    def group(self) -> GroupCommit:
        assert self._group is not None, "runtime not started"
        return self._group

    @property
    def actors(self) -> SessionActors[Submission, ChainHead]:
        assert self._actors is not None, "runtime not started"
        return self._actors

    async def run(
        self,
        background: Sequence[Callable[[], Awaitable[None]]] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until `stop()`; `background` tasks live (and are cancelled) with us."""
        try:
            async with open_database(self.settings.pool) as db, trio.open_nursery() as nursery:
                self._db = db
                self._group = GroupCommit(
                    nursery,
                    db,
                    writers=self.settings.group_writers,
                    max_batches=self.settings.group_max_batches,
                    max_bytes=self.settings.group_max_bytes,
                )
                self._actors = SessionActors(
                    nursery,
                    self._commit,
                    inbox_size=self.settings.inbox_size,
                    max_pending=self.settings.max_pending,
                    idle_seconds=self.settings.actor_idle_seconds,
                    linger_seconds=self.settings.actor_linger_seconds,
                )
                nursery.start_soon(self._become_ready)
                nursery.start_soon(self._follow_seal_key)
                for task in background:
                    nursery.start_soon(task)
                task_status.started()
                await self._stop.wait()
                await self._actors.drain(deadline=10)
                nursery.cancel_scope.cancel()
        finally:
            self._db = None
            self._group = None
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def _become_ready(self) -> None:
        delay = 0.1
        while not self.ready:
            try:
                await prepare_storage(self.db, self.signer)
                if self._group is not None and await self.db.run(citus.has_citus):
                    # Each session's commit runs on its own worker: one per call.
                    self._group.max_batches = 1
                self.ready = True
                log.info("ready; seal key %s", self.signer.key_id)
            except DatabaseUnavailable as exc:
                log.warning("database not ready (%s); retrying in %.1fs", exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _follow_seal_key(self) -> None:
        """Sign with the key `keys rotate-seal` made active, within a poll period,
        without a restart: its file replaced ours at the same path."""
        reported: str | None = None
        while True:
            await trio.sleep(self.settings.seal_key_poll_seconds)
            if not self.ready:
                continue
            try:
                active = await seal_keys.active_seal_key_id(self.db)
            except DatabaseUnavailable:
                continue
            except Exception:
                # A bug here must not take the worker's runtime down with it.
                log.exception("checking the active seal key failed")
                continue
            if active is None or active == self.signer.key_id:
                continue
            key_file = self.settings.key_file()
            try:
                signer = seal_key.load(key_file)
            except (OSError, ValueError) as exc:
                why = f"cannot read {key_file}: {exc}"
            else:
                if signer.key_id == active:
                    log.info("seal key rotated: now signing with %s", active)
                    self.signer = signer
                    continue
                why = f"{key_file} holds key {signer.key_id}"
            if reported != active:
                # Another host rotated with its own file: seals stay verifiable
                # (our key stays listed), but say so once.
                log.warning(
                    "seal key %s is active, but %s; still signing with %s",
                    active,
                    why,
                    self.signer.key_id,
                )
                reported = active

    async def _commit(
        self, sub: Submission, known: ChainHead | None
    ) -> tuple[Outcome, ChainHead | None]:
        if not self.ready:
            return Unavailable("the service is starting: migrations or seal key pending"), None
        try:
            return await append_batch(self.db, sub, self.signer, utc_now, known, self._group)
        except DatabaseUnavailable as exc:
            # The commit may or may not have landed: forget the head, re-read it.
            return Unavailable(str(exc)), None
