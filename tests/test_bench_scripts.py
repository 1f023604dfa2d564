"""The benchmarks are run by hand: each one's `--help` must answer, not crash."""

from __future__ import annotations

import pytest

from .support import ROOT, python

SCRIPTS = sorted(
    path.name
    for path in (ROOT / "bench").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)


def test_every_runnable_bench_script_is_listed() -> None:
    # `make bench` runs these; a new one without a main would not be checked here.
    assert {"ingest_bench.py", "latency_bench.py", "scale_bench.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers(script: str) -> None:
    done = python(f"bench/{script}", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) >= 2
