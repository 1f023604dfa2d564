"""The trio-asyncio bridge to asyncpg: one crossing per unit of work.

Shaped by the traps in STACK_NOTES.md: each unit of work (acquire, transaction,
queries, commit) is ONE asyncio coroutine, so a trio cancellation reaches it as a
single asyncio cancel and asyncpg can still roll back and release; no asyncpg
timers (deadlines are trio's); a FIFO semaphore in front of the pool; the loop is
passed explicitly; the pool is closed shielded, with `terminate()` as fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import asyncpg
import trio
import trio_asyncio

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
Work = Callable[[Connection], Awaitable[T]]

# How long a commit or rollback that was interrupted may still take before the
# connection is torn down; the statement itself is never abandoned half-way.
_FINISH_GRACE = 10.0


class DatabaseUnavailable(Exception):
    """The database could not be reached, dropped the connection, or timed out."""


# Errors that mean "the database is not there right now", as opposed to a bug
# in our SQL or a constraint we violated on purpose.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # Serialization failures and deadlocks: nothing was stored, a retry may pass.
    asyncpg.exceptions.TransactionRollbackError,
    # A backend that died while its connection sat idle in the pool (terminated,
    # or the server crashed) sends a FATAL error that asyncpg reads as the start
    # of an operation: the next query on it fails with "cannot switch to state
    # 11/12; another operation (2) is in progress" before reaching the server.
    # `_unusable` tears such a connection down.
    asyncpg.exceptions.InternalClientError,
)


def max_streams(pool_size: int) -> int:
    """How many long reads (`Database.records`) a pool of `pool_size` runs at once."""
    return max(1, pool_size // 2)


@dataclass(frozen=True)
class PoolSettings:
    dsn: str
    max_size: int = 8
    # Deadline of one unit of work, on the trio side (never an asyncpg timeout).
    deadline: float = 10.0


class Database:
    """A pool of asyncpg connections, used from trio one unit of work at a time."""

    def __init__(
        self,
        loop: trio_asyncio.TrioEventLoop,
        pool: asyncpg.Pool,
        settings: PoolSettings,
    ) -> None:
        self._loop = loop
        self._pool = pool
        self._settings = settings
        # trio's Semaphore is FIFO: waiters are served in arrival order, which
        # asyncpg's own pool queue is not (STACK_NOTES trap 3).
        self._fifo = trio.Semaphore(settings.max_size)
        # Long reads (replay, verify) may hold at most half the pool, so that
        # commits always find a connection.
        self._streams = trio.Semaphore(max_streams(settings.max_size))
        self.waits = 0
        # FIFO places held by `OwnedConnection`s, and how many of those run now.
        self._kept = 0
        self._kept_running = 0

    @property
    def max_size(self) -> int:
        return self._settings.max_size

    def statistics(self) -> dict[str, int]:
        stats = self._fifo.statistics()
        held = self._settings.max_size - self._fifo.value
        return {
            # Units of work running: a kept connection counts only while it runs one.
            "in_use": held - self._kept + self._kept_running,
            "kept": self._kept,
            "waiting": stats.tasks_waiting,
            "waits_total": self.waits,
        }

    async def transaction(self, work: Work[T], *, deadline: float | None = None) -> T:
        """Run `work(conn)` inside one transaction; commit if it returns.

        Raises DatabaseUnavailable when the database is unreachable or the
        deadline passes; the transaction is then rolled back (or, if the commit
        was already on its way, allowed to finish: a retry is idempotent).
        """
        return await self._cross(_in_transaction(self._pool, work), deadline)

    async def run(self, work: Work[T], *, deadline: float | None = None) -> T:
        """Run `work(conn)` on a pooled connection, outside any explicit transaction."""
        return await self._cross(_on_connection(self._pool, work), deadline)

    @asynccontextmanager
    async def records(
        self,
        query: str,
        *args: object,
        by_key: str,
        chunk: int,
        max_bytes: int,
        deadline: float | None = None,
    ) -> AsyncIterator[Callable[[], Awaitable[list[bytes]]]]:
        """Stored records through a server-side cursor in a read-only snapshot.

        `query` returns, per record, the record itself when it is small (else
        NULL) and then the key that `by_key` takes to read a large one alone.
        Yields `fetch()`, which returns the next records (an empty list at the
        end): at most `chunk` of them and, but for the last one, fewer than
        `max_bytes` in all, so a read holds a bounded number of bytes whatever
        the session holds. Each crossing is shielded from outside cancellation
        and bounded by its own deadline, so a client that goes away is noticed
        between fetches, and the cursor, transaction and connection are
        released at once, never half-way.
        """
        limit = self._limit(deadline)
        async with self._streams, self._fifo:
            cur = _Cursor(self._pool, query, args)
            try:
                await self._shielded(cur.open(), limit)
                yield lambda: self._shielded(cur.fetch(chunk, max_bytes, by_key), limit)
            finally:
                await self._shielded(cur.close(), limit)

    @asynccontextmanager
    async def owned(self) -> AsyncIterator[OwnedConnection]:
        """A connection kept across units of work by one task (a group-commit
        writer), for the block's duration: see `OwnedConnection`."""
        owner = OwnedConnection(self)
        try:
            yield owner
        finally:
            await owner.give_back()

    async def _shielded(self, coro: Awaitable[T], limit: float) -> T:
        with trio.CancelScope(shield=True):
            result = await self._bridged(coro, limit)
        return result

    def _limit(self, deadline: float | None) -> float:
        return self._settings.deadline if deadline is None else deadline

    def _count_wait(self) -> None:
        """Before taking one of the FIFO semaphore's places: `waits` counts the
        takers that found none free."""
        if self._fifo.value == 0:
            self.waits += 1

    async def _cross(self, coro: Awaitable[T], deadline: float | None) -> T:
        try:
            self._count_wait()
            async with self._fifo:
                return await self._bridged(coro, self._limit(deadline))
        finally:
            # A coroutine never started (cancelled while queued) must not warn.
            if asyncio.iscoroutine(coro):
                coro.close()

    async def _bridged(self, coro: Awaitable[T], limit: float) -> T:
        """One crossing of the bridge, under a trio deadline, with errors mapped."""
        try:
            with trio.fail_after(limit):
                result: T = await self._loop.run_aio_coroutine(coro)
                return result
        except trio.TooSlowError as exc:
            raise DatabaseUnavailable(f"database call exceeded {limit:.1f}s") from exc
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


class OwnedConnection:
    """One pooled connection that a task keeps across its units of work.

    `Database.run` takes a connection from the pool and gives it back on every
    call: on the bridge that is five more asyncio callbacks, each one pass of
    trio's scheduler, and an asyncio task for the pool's shielded release (a
    `SELECT 1` in a loop: 12 passes and 328 us of CPU each, against 7 and 200 us
    here). A task that writes all the time, a group-commit writer, keeps one.

    `run` has the guarantees of `Database.run`: the connection counts against
    the pool's FIFO semaphore from its first use until it is given back; each
    unit of work is one crossing under a trio deadline, with errors mapped to
    DatabaseUnavailable. A unit of work that raises for any reason (the
    database gone, the deadline, a cancellation, an error of its own) hands the
    connection back to the pool, which finishes or cancels what was running on
    it, rolls back, or drops a broken connection, exactly as after a
    `Database.run` that raised; the next `run` takes a fresh one. A connection
    found closed before a unit of work starts (its backend terminated, the
    server restarted while it sat idle) is replaced first, unnoticed, as the
    pool replaces a closed one; one lost during a unit of work costs that unit,
    as it would in the pool.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._slot = False  # holds one of the FIFO semaphore's places
        # Set by the asyncio side as soon as the pool hands it over, so that a
        # cancellation never loses a connection between the two sides.
        self._conn: Connection | None = None

    async def run(self, work: Work[T], *, deadline: float | None = None) -> T:
        """Run `work(conn)` on this task's connection, outside any explicit transaction."""
        db = self._db
        if not self._slot:
            db._count_wait()
            await db._fifo.acquire()
            self._slot = True
            db._kept += 1
        coro = self._unit(work)
        db._kept_running += 1
        try:
            return await db._bridged(coro, db._limit(deadline))
        except BaseException:
            await self.give_back()
            raise
        finally:
            db._kept_running -= 1
            coro.close()  # only a coroutine never started (cancelled first) is left open

    async def _unit(self, work: Work[T]) -> T:
        """The asyncio half of `run`: one crossing."""
        pool = self._db._pool
        if self._conn is not None and _is_closed(self._conn):
            # Lost while kept (the backend was terminated, the server restarted):
            # the pool has already taken it back, or takes it back now.
            lost, self._conn = self._conn, None
            await pool.release(lost)
        if self._conn is None:
            self._conn = await pool.acquire()
        async with _unusable(self._conn):
            return await work(self._conn)

    async def give_back(self) -> None:
        """Return the connection to the pool (shielded, bounded), if one is kept."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                try:
                    await self._db._shielded(self._db._pool.release(conn), _FINISH_GRACE)
                except BaseException:
                    with contextlib.suppress(asyncpg.exceptions.InterfaceError):  # detached
                        conn.terminate()
                    raise
        finally:
            if self._slot:
                self._slot = False
                self._db._kept -= 1
                self._db._fifo.release()


async def _finish(op: Awaitable[None], conn: Connection) -> None:
    """Run a COMMIT or ROLLBACK to its end even if cancelled meanwhile.

    The one-shot asyncio cancel that a trio deadline sends must not cut a commit
    in half: we keep waiting for it (bounded), and only a connection that does
    not answer within the grace period is torn down.
    """
    task = asyncio.ensure_future(op)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
            try:
                await asyncio.wait_for(asyncio.shield(task), _FINISH_GRACE)
            except (TimeoutError, asyncio.CancelledError):
                conn.terminate()
                raise
    task.result()
    if cancelled:
        log.info("a commit or rollback finished after its caller was cancelled")


class _Cursor:
    """The asyncio half of `Database.cursor`: each method is one crossing."""

    def __init__(self, pool: asyncpg.Pool, query: str, args: tuple[object, ...]) -> None:
        self._pool = pool
        self._query = query
        self._args = args
        self._conn: Connection | None = None
        self._tx: Any = None
        self._cursor: Any = None
        # Rows the cursor returned that a fetch has not handed out yet.
        self._pending: deque[asyncpg.Record] = deque()

    async def open(self) -> None:
        conn = self._conn = await self._pool.acquire()
        self._tx = conn.transaction(isolation="repeatable_read", readonly=True)
        await self._tx.start()
        self._cursor = await conn.cursor(self._query, *self._args)

    async def fetch(self, n: int, max_bytes: int, by_key: str) -> list[bytes]:
        out: list[bytes] = []
        size = 0
        while len(out) < n and size < max_bytes:
            if not self._pending:
                rows = await self._cursor.fetch(n)
                if not rows:
                    break
                # The common case, all of them small and under the budget:
                # handed out whole, without a step per row.
                if not out:
                    records = [row[0] for row in rows]
                    if None not in records and sum(map(len, records)) < max_bytes:
                        return records
                self._pending.extend(rows)
            row = self._pending.popleft()
            record = row[0]
            if record is None:  # a large record: read alone
                assert self._conn is not None
                record = await self._conn.fetchval(by_key, *row[1:])
            out.append(record)
            size += len(record)
        return out

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._tx is not None and not conn.is_closed():
                # Ending the transaction closes the cursor with it.
                await asyncio.wait_for(self._tx.rollback(), _FINISH_GRACE)
        except BaseException:
            conn.terminate()
            raise
        finally:
            await self._pool.release(conn)


async def _in_transaction(pool: asyncpg.Pool, work: Work[T]) -> T:
    async with pool.acquire() as conn, _unusable(conn):
        tx = conn.transaction()
        await tx.start()
        try:
            result = await work(conn)
        except BaseException:
            if not _is_closed(conn):
                await _finish(tx.rollback(), conn)
            raise
        await _finish(tx.commit(), conn)
        return result


@asynccontextmanager
async def _unusable(conn: Connection) -> AsyncIterator[None]:
    """A connection whose protocol state asyncpg lost is closed, not pooled again."""
    try:
        yield
    except asyncpg.exceptions.InternalClientError:
        conn.terminate()
        raise


def _is_closed(conn: Connection) -> bool:
    """A connection lost mid-transaction is already detached from its pool proxy,
    whose methods then raise InterfaceError: that, too, means closed. (Letting it
    escape would hide the real error, e.g. the backend being terminated.)"""
    try:
        return conn.is_closed()
    except asyncpg.exceptions.InterfaceError:
        return True


async def _on_connection(pool: asyncpg.Pool, work: Work[T]) -> T:
    async with pool.acquire() as conn, _unusable(conn):
        return await work(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset round trip (RESET ALL, UNLISTEN,
    advisory unlock...): we set no session state, take only transaction-scoped
    locks and close cursors with their transaction. asyncpg still rolls back an
    open transaction before calling this."""


# A Unix socket's send buffer (net.core.wmem_default, 208 KiB) holds only a few
# of the batches of a group commit's statement: the rest then goes out as the
# backend drains its 8 KiB reads, each partial send one more wake-up of the
# bridge's event loop. With 4 MiB a group's statement leaves in one send (16
# batches of 57 KiB: ~0.9 MiB; only a group near CHAIN_GROUP_MAX_BYTES, 4 MiB of
# records, still takes two): 1.04x events/s, -3.5 % of the server's CPU per
# batch in bench/ingest_bench.py. The kernel caps it at net.core.wmem_max (4 MiB
# here); TCP sizes its own buffers.
_SEND_BUFFER_BYTES = 4 << 20


async def _widen_send_buffer(conn: asyncpg.Connection) -> None:
    """asyncpg's `init`: on each new connection, before it is pooled."""
    sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]
    if sock is not None and sock.family == socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's exception handler: what asyncio and asyncpg report there (e.g.
    asyncpg's "Resetting connection with an active transaction" when a pool
    connection comes back from an interrupted unit of work) is logged, as on a
    plain asyncio loop. trio-asyncio's default handler also raises it in the
    loop's nursery, which cancels everything the loop's block holds: the whole
    runtime, session actors included (found by the fault soak's database freeze)."""
    message = context.get("message") or "unhandled error in the asyncio loop"
    exception = context.get("exception")
    # A report without an exception is asyncpg's notice of something it then
    # repairs (the reset rolls back); one with an exception is an error.
    log.log(
        logging.ERROR if exception else logging.WARNING, "asyncio: %s", message, exc_info=exception
    )


@asynccontextmanager
async def open_database(settings: PoolSettings) -> AsyncIterator[Database]:
    """Open a trio-asyncio loop and an asyncpg pool for the block's duration.

    Must be entered from the task that will own the loop for its whole life
    (STACK_NOTES trap 4: handlers see it only through the object we pass).
    """
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_asyncio_error)
        pool = await loop.run_aio_coroutine(
            asyncpg.create_pool(
                settings.dsn,
                min_size=0,
                max_size=settings.max_size,
                # 0 disables the per-release inactivity timer (trap 2).
                max_inactive_connection_lifetime=0,
                command_timeout=None,
                reset=_keep_session,
                init=_widen_send_buffer,
            )
        )
        try:
            yield Database(loop, pool, settings)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5) as scope:
                await loop.run_aio_coroutine(pool.close())
            if scope.cancelled_caught:
                log.warning("pool did not close in 5s; terminating its connections")
                pool.terminate()


def with_database(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run one async `work(db)` from synchronous code (the CLI, test set-up) on a
    small pool of its own, under its own trio run."""

    async def main() -> T:
        async with open_database(PoolSettings(url, max_size=2, deadline=60)) as db:
            return await work(db)

    return trio.run(main)
