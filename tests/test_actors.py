"""Session actors: one commit at a time per session, bounded queues, retirement."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from service.core.actors import SessionActors
from service.core.outcomes import Appended, Failed, Outcome, Overloaded, Unavailable


class Recorder:
    """A commit function that records what runs, and can be held at a gate."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self.done: list[tuple[str, int]] = []
        self.states: list[int | None] = []
        self.gate = trio.Event()
        self.gate.set()

    async def commit(self, job: tuple[str, int], state: int | None) -> tuple[Outcome, int]:
        session, n = job
        self.states.append(state)
        self.running[session] = self.running.get(session, 0) + 1
        self.most_at_once[session] = max(self.most_at_once.get(session, 0), self.running[session])
        try:
            await self.gate.wait()
            await trio.sleep(0.001)
            if n < 0:
                raise RuntimeError("a bug in the commit")
        finally:
            self.running[session] -= 1
        self.done.append((session, n))
        return Appended(session, 1, 0, n, "h", b"{}"), n


@asynccontextmanager
async def actors(
    rec: Recorder, *, inbox: int = 8, pending: int = 100, idle: float = 30
) -> AsyncIterator[SessionActors[tuple[str, int], int]]:
    async with trio.open_nursery() as nursery:
        registry = SessionActors(
            nursery, rec.commit, inbox_size=inbox, max_pending=pending, idle_seconds=idle
        )
        yield registry
        await registry.drain()
        nursery.cancel_scope.cancel()


async def test_one_session_commits_one_batch_at_a_time_in_order() -> None:
    rec = Recorder()
    outcomes: dict[tuple[str, int], Outcome] = {}
    async with actors(rec) as registry:

        async def send(session: str, n: int) -> None:
            outcomes[session, n] = await registry.submit((1, session), (session, n))

        async with trio.open_nursery() as nursery:
            for n in range(6):
                for session in ("a", "b", "c"):
                    nursery.start_soon(send, session, n)
                    await trio.testing.wait_all_tasks_blocked()
    assert all(isinstance(o, Appended) for o in outcomes.values())
    assert rec.most_at_once == {"a": 1, "b": 1, "c": 1}
    # Sessions ran side by side, each in the order its batches arrived.
    for session in ("a", "b", "c"):
        assert [n for s, n in rec.done if s == session] == list(range(6))


async def test_the_actor_hands_its_state_from_one_commit_to_the_next() -> None:
    rec = Recorder()
    async with actors(rec) as registry:
        for n in range(3):
            await registry.submit((1, "s"), ("s", n))
    assert rec.states == [None, 0, 1]


async def test_a_full_inbox_or_too_much_pending_work_is_refused_at_once() -> None:
    rec = Recorder()
    rec.gate = trio.Event()  # hold every commit
    results: list[Outcome] = []
    async with actors(rec, inbox=2, pending=4) as registry:

        async def send(session: str, n: int) -> None:
            results.append(await registry.submit((1, session), (session, n)))

        async with trio.open_nursery() as nursery:
            # One running and two queued fill session s; the fourth is refused.
            for n in range(4):
                nursery.start_soon(send, "s", n)
                await trio.testing.wait_all_tasks_blocked()
            assert [type(r) for r in results] == [Overloaded]
            assert "session" in results[0].reason  # type: ignore[union-attr]
            # Session t takes one more; then the process-wide cap (4) refuses t's next.
            nursery.start_soon(send, "t", 0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, "t", 1)
            await trio.testing.wait_all_tasks_blocked()
            assert [type(r) for r in results] == [Overloaded, Overloaded]
            assert "process" in results[1].reason  # type: ignore[union-attr]
            assert registry.statistics()["pending"] == 4
            rec.gate.set()
    assert sorted(rec.done) == [("s", 0), ("s", 1), ("s", 2), ("t", 0)]
    assert registry.statistics()["pending"] == 0


async def test_a_client_that_leaves_before_its_turn_is_skipped() -> None:
    rec = Recorder()
    rec.gate = trio.Event()
    async with actors(rec) as registry, trio.open_nursery() as nursery:
        nursery.start_soon(registry.submit, (1, "s"), ("s", 0))
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()  # gives up while queued behind batch 0
            await registry.submit((1, "s"), ("s", 1))
        rec.gate.set()
    assert rec.done == [("s", 0)]
    assert registry.statistics()["pending"] == 0


async def test_a_failing_commit_is_an_outcome_and_the_actor_lives_on() -> None:
    rec = Recorder()
    async with actors(rec) as registry:
        assert isinstance(await registry.submit((1, "s"), ("s", -1)), Failed)
        assert isinstance(await registry.submit((1, "s"), ("s", 1)), Appended)
    assert rec.states == [None, None]  # the state is forgotten after a failure


async def test_idle_actors_retire_and_come_back_on_demand(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with actors(rec, idle=30) as registry:
        for i in range(20):
            await registry.submit((1, f"s{i}"), (f"s{i}", 0))
        assert registry.statistics()["live"] == 20
        with trio.fail_after(60):  # virtual seconds: the idle period is 30
            while registry.statistics()["live"]:
                await trio.sleep(0.01)
        assert isinstance(await registry.submit((1, "s0"), ("s0", 1)), Appended)
        assert registry.statistics() == {"live": 1, "working": 0, "pending": 0, "started": 21}
    # A retired actor's successor starts afresh: no state survives retirement.
    assert rec.states[-1] is None


async def test_a_resting_session_is_live_but_has_no_actor_at_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # `live` counts the sessions held (what memory follows), `working` the
    # actors at work (tasks): a session between batches is the one, not the other.
    rec = Recorder()
    rec.gate = trio.Event()
    async with actors(rec, idle=30) as registry:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(registry.submit, (1, "s"), ("s", 0))
            await trio.testing.wait_all_tasks_blocked()
            assert registry.statistics()["live"] == 1
            assert registry.statistics()["working"] == 1
            rec.gate.set()
        with trio.fail_after(5):  # virtual seconds: the actor rests, its inbox empty
            while registry.statistics()["working"]:
                await trio.sleep(0.01)
        assert registry.statistics()["live"] == 1  # its head is kept
        with trio.fail_after(60):  # the idle period is 30
            while registry.statistics()["live"]:
                await trio.sleep(0.01)
        assert registry.statistics()["working"] == 0


async def test_draining_finishes_queued_work_and_refuses_new() -> None:
    rec = Recorder()
    rec.gate = trio.Event()
    results: list[Outcome] = []
    async with trio.open_nursery() as nursery:
        registry = SessionActors(
            nursery, rec.commit, inbox_size=8, max_pending=100, idle_seconds=30
        )

        async def send(n: int) -> None:
            results.append(await registry.submit((1, "s"), ("s", n)))

        for n in range(3):
            nursery.start_soon(send, n)
            await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as draining:
            draining.start_soon(registry.drain)
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(await registry.submit((1, "s"), ("s", 9)), Unavailable)
            rec.gate.set()
        nursery.cancel_scope.cancel()
    assert [n for _, n in rec.done] == [0, 1, 2]
    assert all(isinstance(r, Appended) for r in results)


class _Body:
    """Stands for a request's data: weak-referenceable, so a test can see it freed."""

    def __init__(self, size: int) -> None:
        self.data = bytes(size)


async def test_an_idle_actor_holds_no_request_data() -> None:
    async def commit(job: _Body, state: int | None) -> tuple[Outcome, int]:
        return Appended("s", 1, 0, 0, "h", b"{}"), 0

    async with trio.open_nursery() as nursery:
        registry = SessionActors(nursery, commit, inbox_size=8, max_pending=100, idle_seconds=30)
        freed: list[weakref.ref[_Body]] = []
        for i in range(3):
            body = _Body(1 << 20)
            freed.append(weakref.ref(body))
            assert isinstance(await registry.submit((1, f"s{i}"), body), Appended)
            del body
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        # The three actors are alive and idle, and none keeps its last batch.
        assert registry.statistics()["live"] == 3
        assert [ref() for ref in freed] == [None, None, None]
        await registry.drain()
        nursery.cancel_scope.cancel()
