"""One actor per active session: batches of a session are committed one at a time.

Each `SessionActor` owns a small bounded inbox and lives in the runtime's
nursery (never a request's), but only while it has work: when its inbox is
empty it ends at once, and what it remembers of its session (the head its last
commit left, a few hundred bytes) waits in the registry for `idle_seconds`, to
be handed to the session's next actor. So a session between two batches costs
a dictionary entry, not a task (~6 KB of Python objects each: 20k sessions
within the idle period used to cost ~180 MB, which the allocators kept after
they retired), and running actors are bounded by the pending work. Nothing
queues without bound: a full inbox, or too much pending work in the process, is
answered at once with `Overloaded`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
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
        state: S | None = None,
    ) -> None:
        self.session = session
        self._registry = registry
        self.inbox = inbox
        self._jobs = outbox
        # E.g. the chain head its last commit left: only this actor writes the
        # session from this process, so it can trust it (and the commit checks).
        self.state = state

    async def run(self) -> None:
        async with self._jobs:
            while True:
                job = await self._next_job()
                if job is None:
                    return
                await self._handle(job)
                # Our state may be kept for a while: it must not keep the batch alive.
                del job

    async def _next_job(self) -> _Job[J] | None:
        """The next job, waiting up to the registry's linger (a session that sends
        batch after batch keeps its actor); None once the actor rests or closes."""
        linger = self._registry.linger_seconds
        if linger > 0:
            with trio.move_on_after(linger):
                try:
                    return await self._jobs.receive()
                except trio.EndOfChannel:
                    return None
        # No checkpoint between finding the inbox empty and leaving the
        # registry: no submitter can pick us in between.
        try:
            return self._jobs.receive_nowait()
        except trio.WouldBlock:
            self._registry._rest(self)
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
                job.outcome, self.state = await self._registry.commit(job.payload, self.state)
            except Exception:
                log.exception("commit failed for session %s", self.session[1])
                job.outcome, self.state = Failed(), None
        finally:
            job.payload = None  # the submitter reads only the outcome
            self._registry._job_finished()
            job.done.set()


class SessionActors(Generic[J, S]):
    """The registry: routes each job to its session's actor, starting it if needed,
    and keeps what resting actors remembered for `idle_seconds`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        commit: Callable[[J, S | None], Awaitable[tuple[Outcome, S | None]]],
        *,
        inbox_size: int,
        max_pending: int,
        idle_seconds: float,
        linger_seconds: float = 0.0,
    ) -> None:
        self._nursery = nursery
        # How long an actor with an empty inbox waits for its session's next
        # batch before it rests: back-to-back batches then reuse one task.
        self.linger_seconds = linger_seconds
        self.commit = commit
        self._inbox_size = inbox_size
        self._max_pending = max_pending
        self.idle_seconds = idle_seconds
        self._actors: dict[SessionRef, SessionActor[J, S]] = {}
        # Sessions whose actor rested, oldest first: (when it is forgotten, its state).
        self._resting: OrderedDict[SessionRef, tuple[float, S | None]] = OrderedDict()
        self._someone_rests = trio.Event()
        self._pending = 0
        self._closed = False
        self._idle = trio.Event()
        self.started_total = 0
        nursery.start_soon(self._forget_idle_sessions, name="SessionActors expiry")

    def statistics(self) -> dict[str, int]:
        """`live`: sessions with an actor at work, or whose state is still kept;
        `working`: those with an actor (a task) at work, or lingering for more."""
        return {
            "live": len(self._actors) + len(self._resting),
            "working": len(self._actors),
            "pending": self._pending,
            "started": self.started_total,
        }

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
        _, state = self._resting.pop(session, (0.0, None))
        actor = SessionActor(session, self, send, receive, state)
        self._actors[session] = actor
        self.started_total += 1
        self._nursery.start_soon(actor.run, name=f"SessionActor {session[1]}")
        return actor

    def _job_finished(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def _rest(self, actor: SessionActor[J, S]) -> None:
        """The actor's inbox is empty: it ends, and its state is kept for a while."""
        if self._actors.get(actor.session) is actor:
            del self._actors[actor.session]
            if actor.state is not None and not self._closed:
                forget_at = trio.current_time() + self.idle_seconds
                self._resting[actor.session] = (forget_at, actor.state)
                self._someone_rests.set()
        actor.inbox.close()

    async def _forget_idle_sessions(self) -> None:
        """Retire the sessions that stayed idle for `idle_seconds` (oldest first)."""
        while True:
            if not self._resting:
                # A table that once held many entries keeps their room: drop it.
                self._resting = OrderedDict()
                self._someone_rests = trio.Event()
                await self._someone_rests.wait()
                continue
            session, (forget_at, _) = next(iter(self._resting.items()))
            if forget_at > trio.current_time():
                await trio.sleep_until(forget_at)
                continue
            del self._resting[session]

    async def drain(self, deadline: float = math.inf) -> None:
        """Stop taking work; let every actor finish what it holds (graceful shutdown)."""
        self._closed = True
        for actor in list(self._actors.values()):
            actor.inbox.close()
        with trio.move_on_after(deadline):
            while self._pending:
                self._idle = trio.Event()
                await self._idle.wait()
