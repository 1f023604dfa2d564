"""The client under fork(), asyncio, trio and plain threads."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import trio
import trio.lowlevel
from agent_chain import Client, SessionForkedError

from ..support import assert_whole_batches
from .conftest import Service


def test_fork_child_starts_clean_and_parent_session_is_unusable_there(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    with Client(service.url, api_key, journal_dir=tmp_path) as client:
        parent = client.session()
        parent.record("before.fork", {})
        assert client.flush(timeout=30).complete  # the sender thread is running
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                os.close(read_end)
                try:
                    parent.record("in.child", {})
                    msg = "parent session usable in child"
                except SessionForkedError as exc:
                    msg = str(exc)
                if "forked child" in msg:
                    child = client.session()
                    for i in range(7):
                        child.record("child.step", {"i": i})
                    report = client.flush(timeout=30)
                    msg = f"{child.session_id} {report.complete} {report.acknowledged}"
                    code = 0
                os.write(write_end, msg.encode())
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            answer = r.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, answer
        child_sid, complete, acknowledged = answer.split()
        assert (complete, acknowledged) == ("True", "7")
        # The parent goes on as if nothing happened.
        parent.record("after.fork", {})
        assert client.flush(timeout=30).complete
    assert service.stored(child_sid).event_count == 7
    assert service.stored(parent.session_id).event_count == 2


def test_asyncio(service: Service, api_key: str, tmp_path: Path) -> None:
    async def agent(client: Client) -> str:
        with client.session() as s:
            for i in range(30):
                s.record("step", {"i": i})
                await asyncio.sleep(0)
            report = await client.aflush(timeout=30)
        assert report.complete, report
        return s.session_id

    with Client(service.url, api_key, journal_dir=tmp_path) as client:
        sid = asyncio.run(agent(client))
    assert service.stored(sid).event_count == 30


async def test_trio(service: Service, api_key: str, tmp_path: Path) -> None:
    client = Client(service.url, api_key, journal_dir=tmp_path)
    sids: list[str] = []

    async def agent(n: int) -> None:
        with client.session() as s:
            sids.append(s.session_id)
            for i in range(n):
                s.record("step", {"i": i})
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for n in (5, 17, 40):
            nursery.start_soon(agent, n)
    report = await client.aflush(timeout=30)
    assert report.complete, report
    await trio.to_thread.run_sync(client.close)
    stored = [await trio.to_thread.run_sync(service.stored, sid) for sid in sids]
    counts = sorted(s.event_count for s in stored)
    assert counts == [5, 17, 40]


def test_threads_share_a_client_and_a_session(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    with Client(service.url, api_key, journal_dir=tmp_path, max_batch_events=7) as client:
        shared = client.session()
        returned: list[tuple[int, str]] = []
        lock = threading.Lock()

        def work() -> None:
            own = client.session()
            for i in range(50):
                got = shared.record("shared", {"i": i})
                with lock:
                    returned.append(got)
                own.record("own", {"i": i})
            own.close()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = client.flush(timeout=60)
        assert report.complete, report
        assert len(client.status().sessions) == 5
    stored = service.stored(shared.session_id)
    assert_whole_batches(stored)
    assert stored.events == dict(returned)
    assert sorted(dict(returned)) == list(range(200))
