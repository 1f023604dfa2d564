"""The benchmarks are run by hand: each one's `--help` must answer, not crash, and
what they write must say what the machine was."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_saved_result_says_how_fast_the_machine_was_before_and_after(tmp_path: Path) -> None:
    # A p99 in ms moves with this VM's speed: every result file must carry it.
    script = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, "bench")
import results
path = results.save("probe", results.context(), {{"x": 1}}, directory=Path({str(tmp_path)!r}))
print(json.dumps(json.loads(path.read_text())["context"]))
"""
    done = python("-c", script)
    assert done.returncode == 0, done.stderr
    context = json.loads(done.stdout)
    for when in ("speed_at_start", "speed_at_end"):
        speed = context[when]
        # ~1-2 GB/s and ~0.2-0.4 ms on the VMs this runs on; bounds far outside that.
        assert 10 < speed["sha256_4k_mb_s"] < 100_000
        assert 1 < speed["python_unit_us"] < 100_000
