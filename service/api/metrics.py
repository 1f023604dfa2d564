"""Prometheus metrics, and GET /metrics.

With several hypercorn workers, set PROMETHEUS_MULTIPROC_DIR (the CLI does) and
every worker's samples are summed on each scrape.
"""

from __future__ import annotations

import os

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from quart import Blueprint, Response

from ..runtime import Runtime


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "chain_http_requests",
            "HTTP requests by route, status and problem code",
            ["route", "status", "code"],
            registry=r,
        )
        self.events_accepted = Counter(
            "chain_events_accepted", "Events appended to chains", registry=r
        )
        self.batches = Counter(
            "chain_batches", "Batches committed, by result", ["result"], registry=r
        )
        self.batch_seconds = Histogram(
            "chain_batch_seconds",
            "Time from hand-off to the session actor to its outcome",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.live_actors = Gauge(
            "chain_live_session_actors",
            "Sessions held: with an actor at work, or resting with their head kept "
            "for CHAIN_ACTOR_IDLE_SECONDS",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.working_actors = Gauge(
            "chain_working_session_actors",
            "Session actors at work (a task each), or lingering for their next batch",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pending = Gauge(
            "chain_pending_batches",
            "Batches waiting for or inside a commit",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_in_use = Gauge(
            "chain_db_pool_in_use",
            "Database units of work running",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_kept = Gauge(
            "chain_db_pool_kept",
            "Connections kept by group-commit writers between their writes",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "chain_db_pool_waiting",
            "Tasks queued for a database connection",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waits = Counter(
            "chain_db_pool_waits", "Units of work that had to queue for a connection", registry=r
        )
        self._waits_seen = 0
        self.commit_groups = Counter(
            "chain_commit_groups",
            "Statements that wrote several sessions' batches at once (group commit)",
            registry=r,
        )
        self.commit_group_batches = Counter(
            "chain_commit_group_batches", "Batches written by those statements", registry=r
        )
        self._groups_seen = (0, 0)

    def sample(self, runtime: Runtime) -> None:
        """Copy the runtime's live statistics into the gauges."""
        actors = runtime.actors.statistics()
        self.live_actors.set(actors["live"])
        self.working_actors.set(actors["working"])
        self.pending.set(actors["pending"])
        group = runtime.group.statistics()
        groups, batches = group["groups"], group["grouped_batches"]
        self.commit_groups.inc(groups - self._groups_seen[0])
        self.commit_group_batches.inc(batches - self._groups_seen[1])
        self._groups_seen = (groups, batches)
        try:
            pool = runtime.db.statistics()
        except Exception:
            return
        self.pool_in_use.set(pool["in_use"])
        self.pool_kept.set(pool["kept"])
        self.pool_waiting.set(pool["waiting"])
        self.pool_waits.inc(pool["waits_total"] - self._waits_seen)
        self._waits_seen = pool["waits_total"]

    async def sample_forever(self, runtime: Runtime, every: float = 2.0) -> None:
        while True:
            self.sample(runtime)
            await trio.sleep(every)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def routes(runtime: Runtime, metrics: Metrics) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def scrape() -> Response:
        metrics.sample(runtime)
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    return bp
