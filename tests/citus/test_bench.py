"""`bench/citus_bench.py` is run by hand (and by `make bench`) against a cluster:
a short run of it here, so that it cannot rot unseen."""

from __future__ import annotations

import json
from pathlib import Path

from ..support import python
from .conftest import Cluster


def test_the_citus_bench_runs_its_three_phases_and_its_model(
    cluster: Cluster, tmp_path: Path
) -> None:
    # It once asked psutil for the postmaster after closing the connection whose
    # backend it asked about, and crashed when that backend had already exited.
    done = python(
        "bench/citus_bench.py",
        "--url",
        cluster.url,
        "--seconds",
        "1",
        "--batches",
        "3",
        "--writers",
        "2",
        "--results",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split()[:3] for line in done.stdout.splitlines()]
    for name in (["one", "node"], ["cluster", "via", "coordinator"], ["cluster", "via", "workers"]):
        assert any(words[: len(name)] == name for words in lines), done.stdout
    assert "Scaling model" in done.stdout
    assert "connections opened" in done.stdout
    figures = json.loads((tmp_path / "citus.json").read_text())
    phases = figures["phases"]
    assert set(phases) == {"single", "coordinator", "workers"}
    for phase in phases.values():
        assert phase["events_per_s"] > 0 and phase["batches"] > 0
    # Through the coordinator, commits run as single-shard tasks, none fans out.
    coordinator = phases["coordinator"]["nodes"]["coordinator"]
    assert coordinator["single"] > 0
    assert all(n["multi"] == 0 for p in phases.values() for n in p["nodes"].values())
