"""Group commit: the fast-path writes of several sessions in one statement.

A fast-path batch (its session's actor knows the head) is written by one
statement, `chains.append_at_head`. `writers` tasks do these writes, each on a
connection it keeps from its first write on (`OwnedConnection`); the batches
that arrive while they all are busy wait here, and the first writer to finish
takes them all (up to `max_batches` and `max_bytes`, oldest first) and writes
them with one statement, `chains.append_group`: one transaction, one WAL flush
and one crossing of the bridge for the lot. Nothing waits for a group to fill:
a batch that finds a writer free is written at once, alone.

What the single write guarantees holds for each batch of a group:
- one session's batches stay in order: its actor hands over one batch at a
  time, so a group holds at most one batch of a session;
- a batch is all-or-nothing: each runs in a subtransaction of its own, and one
  that raises wrote nothing and fails nothing else (migration 0005);
- no deadlock: a group locks its sessions in one fixed order;
- 'moved' and 'revoked' come back per batch, as from the single write: a moved
  batch is then judged under the lock by `core.commit`, after the group;
- a group's failure as a whole (the database gone, the deadline passed) reaches
  each of its batches as `DatabaseUnavailable`, as the single write's would.

A batch never waits longer than the writes already running plus its group's own.
On a Citus cluster the commit functions run where each session lives, one
session per call, so there `max_batches` is 1 (`Runtime` sets it): each batch
is then written on its own connection, as many at once as the pool allows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import trio

from ..storage import chains
from ..storage.database import Database, DatabaseUnavailable, OwnedConnection
from ..storage.queries import AppendArgs


class WriteFailed(Exception):
    """A batch's write raised in the database: nothing of it was stored."""


async def write_alone(db: Database | OwnedConnection, batch: AppendArgs) -> str:
    """`batch` by a statement of its own, on a pooled connection or a kept one."""
    return await db.run(lambda conn: chains.append_at_head(conn, batch))


@dataclass(eq=False)
class _Write:
    batch: AppendArgs
    size: int
    taken: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    status: str | None = None
    # Why the group this write was in failed as a whole (None: it did not).
    failure: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        nursery: trio.Nursery,
        db: Database,
        *,
        writers: int,
        max_batches: int,
        max_bytes: int,
    ) -> None:
        self._db = db
        self.max_batches = max_batches
        self._max_bytes = max_bytes
        self._queue: deque[_Write] = deque()
        self._idle_writers = trio.lowlevel.ParkingLot()
        self.groups = 0  # statements that wrote more than one batch
        self.grouped = 0  # batches written by those
        self.largest = 0
        for n in range(writers):
            nursery.start_soon(self._writer, name=f"GroupCommit writer {n}")

    def statistics(self) -> dict[str, int]:
        return {
            "queued": len(self._queue),
            "groups": self.groups,
            "grouped_batches": self.grouped,
            "largest": self.largest,
        }

    async def append(self, batch: AppendArgs) -> str:
        """Write `batch` as `chains.append_at_head` does, alone or in a group.

        Returns its status: 'appended', 'moved' or 'revoked'. Raises
        DatabaseUnavailable when its statement did not complete (it may have
        landed whole, or not at all), WriteFailed when the database refused it.
        """
        if self.max_batches <= 1:
            # Grouping off (a Citus cluster): each batch on a connection of its
            # own, as many at once as the pool allows, not through the writers.
            return await write_alone(self._db, batch)
        write = _Write(batch, sum(map(len, batch.rows.records)))
        self._queue.append(write)
        self._idle_writers.unpark()
        try:
            await write.done.wait()
        finally:
            if not write.taken:  # cancelled while queued: never written
                self._queue.remove(write)
        failure = write.failure
        if isinstance(failure, DatabaseUnavailable | trio.Cancelled):
            raise DatabaseUnavailable(str(failure) or "the service is stopping") from failure
        if failure is not None:
            raise WriteFailed(f"the write raised {type(failure).__name__}") from failure
        assert write.status is not None
        if write.status.startswith("failed "):
            _, sqlstate, _ = write.status.split(" ", 2)
            if sqlstate.startswith("40"):  # serialization failure, deadlock: retry
                raise DatabaseUnavailable(f"the write was rolled back: {write.status}")
            raise WriteFailed(write.status)
        return write.status

    async def _writer(self) -> None:
        # Each writer keeps a connection (taken at its first write) instead of
        # taking one from the pool per write: see `OwnedConnection`.
        async with self._db.owned() as conn:
            while True:
                while not self._queue:
                    await self._idle_writers.park()
                await self._write(conn, self._take())

    def _take(self) -> list[_Write]:
        """The queue's oldest writes: at least one, then while the limits allow."""
        group = [self._queue.popleft()]
        size = group[0].size
        while self._queue and len(group) < self.max_batches:
            size += self._queue[0].size
            if size > self._max_bytes:
                break
            group.append(self._queue.popleft())
        for write in group:
            write.taken = True
        return group

    async def _write(self, conn: OwnedConnection, group: list[_Write]) -> None:
        batches = [w.batch for w in group]
        try:
            if len(group) == 1:
                statuses = [await write_alone(conn, batches[0])]
            else:
                statuses = await conn.run(lambda c: chains.append_group(c, batches))
                self.groups += 1
                self.grouped += len(group)
                self.largest = max(self.largest, len(group))
            for write, status in zip(group, statuses, strict=True):
                write.status = status
        except BaseException as exc:
            # Each batch's task reports it; the writer goes on, unless cancelled.
            for write in group:
                write.failure = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for write in group:
                write.done.set()
