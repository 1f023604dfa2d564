"""`serve --workers N`: the worker processes, and their supervision.

hypercorn's own multi-worker loop (`hypercorn.run.run`) takes the whole server
down, with exit status 0, when one worker dies; and workers outlive a killed
master, holding the port. Here a worker that dies is logged and replaced, a
crash loop stops the server with status 1, and workers shut down gracefully
when the process that started them is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from hypercorn.config import Config

log = logging.getLogger(__name__)


# A worker that dies (OOM killer, SIGKILL, a crash) is replaced. A worker that
# fails by itself (an exit status, not a signal) within _EARLY seconds of its
# start never got going; this many such failures in a row mean every new
# worker fails (bad settings, a broken install): stop, exit 1. A worker killed
# by a signal is always replaced.
_EARLY = 10.0
_CRASH_LOOP = 5


def supervise(config: Config) -> int:
    """hypercorn's multi-worker loop (`hypercorn.run.run`), except that a worker that
    dies is logged and replaced instead of taking the whole server down, and that
    workers shut down by themselves if this process dies."""
    import multiprocessing
    from multiprocessing.connection import wait
    from multiprocessing.context import SpawnProcess

    ctx = multiprocessing.get_context("spawn")
    sockets = config.create_sockets()
    shutdown_event = ctx.Event()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        shutdown_event.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs: list[SpawnProcess] = []
    started: dict[int, float] = {}
    early_deaths = 0
    code = 0
    try:
        while not stopping:
            while len(procs) < config.workers:
                proc = ctx.Process(
                    target=_worker,
                    kwargs={
                        "config": config,
                        "sockets": sockets,
                        "shutdown_event": shutdown_event,
                        "parent": os.getpid(),
                    },
                )
                proc.start()
                procs.append(proc)
                started[id(proc)] = time.monotonic()
            wait([p.sentinel for p in procs], timeout=1.0)
            for proc in [p for p in procs if p.exitcode is not None]:
                proc.join()
                procs.remove(proc)
                _forget_worker_metrics(proc.pid)
                if stopping:
                    continue
                log.error("worker %s exited with %s; starting another", proc.pid, proc.exitcode)
                lived = time.monotonic() - started.pop(id(proc))
                failed_at_start = lived < _EARLY and (proc.exitcode or 0) > 0
                early_deaths = early_deaths + 1 if failed_at_start else 0
                if early_deaths >= _CRASH_LOOP:
                    log.error(
                        "%d workers in a row died within %.0fs of starting; shutting down",
                        _CRASH_LOOP,
                        _EARLY,
                    )
                    stopping, code = True, 1
    finally:
        shutdown_event.set()
        for proc in procs:
            proc.join(config.graceful_timeout + 5)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
    return code


def _worker(config: Config, sockets: object, shutdown_event: object, parent: int) -> None:
    """One hypercorn trio worker (in a spawned process) that also shuts down
    gracefully when the serve process that started it is gone."""
    import threading

    from hypercorn.trio.run import trio_worker

    # The serve process coordinates shutdown (SIGINT from a terminal reaches us too).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        shutdown_event.set()  # type: ignore[attr-defined]

    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    trio_worker(config, sockets, shutdown_event)  # type: ignore[arg-type]


def _forget_worker_metrics(pid: int | None) -> None:
    """A dead worker's live gauges leave the summed metrics (its counters stay)."""
    if pid is None or "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
