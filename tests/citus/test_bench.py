"""`bench/citus_bench.py` is run by hand (and by `make bench`) against a cluster:
a short run of it here, so that it cannot rot unseen."""

from __future__ import annotations

from ..support import python
from .conftest import Cluster


def test_the_citus_bench_runs_its_three_phases_and_its_model(cluster: Cluster) -> None:
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
    )
    assert done.returncode == 0, done.stderr[-2000:]
    phases = [line.split()[:3] for line in done.stdout.splitlines()]
    for name in (["one", "node"], ["cluster", "via", "coordinator"], ["cluster", "via", "workers"]):
        assert any(p[: len(name)] == name for p in phases), done.stdout
    assert "Scaling model" in done.stdout
    assert "connections opened" in done.stdout
