"""What a session costs a worker between its batches, and after it retires.

Issue 10: 20k sessions within the idle period left RSS ~190 MB up after they all
retired. Not a leak nor a cache: each idle session kept a task waiting on its
inbox (~6 KB of Python objects), and the allocators kept the freed memory
(README, "Memory"). An idle session is now a registry entry; these tests count
tasks and objects, never time or RSS (bench/memory_bench.py measures RSS).
"""

from __future__ import annotations

import gc

import trio
import trio.testing

from service.core.actors import SessionActors
from service.core.outcomes import Appended, Outcome

SESSIONS = 500


async def commit(job: int, state: str | None) -> tuple[Outcome, str]:
    return Appended("s", 1, 0, job, "h", b"{}"), f"head of {job}"


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_a_session_between_batches_holds_no_task_and_few_objects() -> None:
    async with trio.open_nursery() as nursery:
        registry = SessionActors(nursery, commit, inbox_size=8, max_pending=100, idle_seconds=30)
        await registry.submit((1, "warm-up"), 0)
        await trio.testing.wait_all_tasks_blocked()
        tasks, objects = len(nursery.child_tasks), tracked_objects()
        for i in range(SESSIONS):
            assert isinstance(await registry.submit((1, f"s{i}"), i), Appended)
        await trio.testing.wait_all_tasks_blocked()
        # All are remembered (their next batch takes the fast path) ...
        assert registry.statistics()["live"] == SESSIONS + 1
        # ... by no task of their own (each used to hold one, ~40 objects with it).
        assert len(nursery.child_tasks) == tasks
        assert (tracked_objects() - objects) / SESSIONS < 2
        nursery.cancel_scope.cancel()


async def test_a_resting_session_hands_its_state_to_its_next_actor() -> None:
    seen: list[str | None] = []

    async def remembering(job: int, state: str | None) -> tuple[Outcome, str]:
        seen.append(state)
        return await commit(job, state)

    async with trio.open_nursery() as nursery:
        registry = SessionActors(
            nursery, remembering, inbox_size=8, max_pending=100, idle_seconds=30
        )
        for n in range(3):
            await registry.submit((1, "s"), n)
            await trio.testing.wait_all_tasks_blocked()  # its actor ends in between
        assert seen == [None, "head of 0", "head of 1"]
        assert registry.statistics()["started"] == 3
        nursery.cancel_scope.cancel()


async def test_retired_sessions_leave_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        registry = SessionActors(nursery, commit, inbox_size=8, max_pending=100, idle_seconds=30)
        await registry.submit((1, "warm-up"), 0)
        with trio.fail_after(60):  # virtual seconds
            while registry.statistics()["live"]:
                await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        tasks, objects = len(nursery.child_tasks), tracked_objects()
        for i in range(SESSIONS):
            await registry.submit((1, f"s{i}"), i)
        with trio.fail_after(60):
            while registry.statistics()["live"]:
                await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == tasks
        assert tracked_objects() - objects < 50
        nursery.cancel_scope.cancel()


async def test_a_session_sending_batch_after_batch_keeps_its_actor() -> None:
    async with trio.open_nursery() as nursery:
        registry = SessionActors(
            nursery, commit, inbox_size=8, max_pending=100, idle_seconds=30, linger_seconds=60
        )
        for n in range(3):
            await registry.submit((1, "s"), n)
            await trio.testing.wait_all_tasks_blocked()  # within the linger
        assert registry.statistics()["started"] == 1
        nursery.cancel_scope.cancel()
