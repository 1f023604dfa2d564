"""One actor per active session: batches of a session are committed one at a time.

Each `SessionActor` owns a small bounded inbox and lives in the runtime's
nursery (never a request's). It retires after an idle period, so memory follows
the number of *active* sessions. Nothing queues without bound: a full inbox, or
too much pending work in the process, is answered at once with `Overloaded`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from .outcomes import Failed, Outcome, Overloaded, Unavailable

log = logging.getLogger(__name__)

SessionRef = tuple[int, str]
"""(tenant_id, session_id): which session an actor serves."""
J = TypeVar("J")
S = TypeVar("S")  # what an actor remembers of its session between jobs


@dataclass(eq=False)
class _Job(Generic[J]):
    payload: J | None
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Outcome | None = None
    abandoned: bool = False


class SessionActor(Generic[J, S]):
    def __init__(
        self,
        session: SessionRef,
        registry: SessionActors[J, S],
        inbox: trio.MemorySendChannel[_Job[J]],
        outbox: trio.MemoryReceiveChannel[_Job[J]],
    ) -> None:
        self.session = session
        self._registry = registry
        self.inbox = inbox
        self._jobs = outbox
        # E.g. the chain head its last commit left: only this actor writes the
        # session from this process, so it can trust it (and the commit checks).
        self._state: S | None = None

    async def run(self) -> None:
        async with self._jobs:
            while True:
                job = await self._next_job()
                if job is None:
                    return
                await self._handle(job)
                # An idle actor must not keep its last batch (megabytes) alive.
                del job

    async def _next_job(self) -> _Job[J] | None:
        with trio.move_on_after(self._registry.idle_seconds):
            try:
                return await self._jobs.receive()
            except trio.EndOfChannel:
                return None
        # Idle: retire, unless a job slipped in as the timer fired. Retiring
        # happens without a checkpoint, so no submitter can pick us in between.
        try:
            return self._jobs.receive_nowait()
        except trio.WouldBlock:
            self._registry._retire(self)
            return None
        except trio.EndOfChannel:
            return None

    async def _handle(self, job: _Job[J]) -> None:
        try:
            if job.abandoned:
                # The client went away before its turn; its retry will be judged afresh.
                return
            try:
                assert job.payload is not None
                job.outcome, self._state = await self._registry.commit(job.payload, self._state)
            except Exception:
                log.exception("commit failed for session %s", self.session[1])
                job.outcome, self._state = Failed(), None
        finally:
            job.payload = None  # the submitter reads only the outcome
            self._registry._job_finished()
            job.done.set()


class SessionActors(Generic[J, S]):
    """The registry: routes each job to its session's actor, starting it if needed."""

    def __init__(
        self,
        nursery: trio.Nursery,
        commit: Callable[[J, S | None], Awaitable[tuple[Outcome, S | None]]],
        *,
        inbox_size: int,
        max_pending: int,
        idle_seconds: float,
    ) -> None:
        self._nursery = nursery
        self.commit = commit
        self._inbox_size = inbox_size
        self._max_pending = max_pending
        self.idle_seconds = idle_seconds
        self._actors: dict[SessionRef, SessionActor[J, S]] = {}
        self._pending = 0
        self._closed = False
        self._idle = trio.Event()
        self.started_total = 0

    def statistics(self) -> dict[str, int]:
        return {"live": len(self._actors), "pending": self._pending, "started": self.started_total}

    async def submit(self, session: SessionRef, payload: J) -> Outcome:
        """Hand `payload` to the session's actor and wait for its outcome."""
        if self._closed:
            return Unavailable("the service is shutting down")
        if self._pending >= self._max_pending:
            return Overloaded("too many batches pending in this process")
        actor = self._actors.get(session) or self._spawn(session)
        job: _Job[J] = _Job(payload)
        try:
            actor.inbox.send_nowait(job)
        except trio.WouldBlock:
            return Overloaded("too many batches pending for this session")
        self._pending += 1
        try:
            await job.done.wait()
        finally:
            if not job.done.is_set():
                job.abandoned = True
        assert job.outcome is not None
        return job.outcome

    def _spawn(self, session: SessionRef) -> SessionActor[J, S]:
        send, receive = trio.open_memory_channel[_Job[J]](self._inbox_size)
        actor = SessionActor(session, self, send, receive)
        self._actors[session] = actor
        self.started_total += 1
        self._nursery.start_soon(actor.run, name=f"SessionActor {session[1]}")
        return actor

    def _job_finished(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def _retire(self, actor: SessionActor[J, S]) -> None:
        if self._actors.get(actor.session) is actor:
            del self._actors[actor.session]
        actor.inbox.close()

    async def drain(self, deadline: float = math.inf) -> None:
        """Stop taking work; let every actor finish what it holds (graceful shutdown)."""
        self._closed = True
        for actor in list(self._actors.values()):
            actor.inbox.close()
        with trio.move_on_after(deadline):
            while self._pending:
                self._idle = trio.Event()
                await self._idle.wait()
