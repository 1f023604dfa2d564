"""Where the benches put their figures: bench/results/<name>.json (gitignored).

Every file carries the run's context: when, the exact command, the commit, the
machine (cores, load average and speed before the run, speed after it) and the
versions that matter, so that a figure can be traced back to what produced it.
bench/plots.py draws the curves from these files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processes import ROOT

RESULTS = ROOT / "bench" / "results"


def git_commit() -> str:
    """The checked-out commit (+ "-dirty" if the tree has changes, other than the
    plots the benches themselves redraw in docs/bench/); read only."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)docs/bench",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


_BLOCK = bytes(range(256)) * 16  # 4 KiB
_BLOCKS = 64  # per timed call


def _python_unit() -> int:
    """A fixed piece of interpreted work: string building, dict updates, calls."""
    counts: dict[str, int] = {}
    for i in range(2_000):
        key = f"k{i % 61}"
        counts[key] = counts.get(key, 0) + i
    return len(counts)


def _hash_blocks() -> None:
    for _ in range(_BLOCKS):
        hashlib.sha256(_BLOCK).digest()


def _median_call(fn: Callable[[], object], seconds: float) -> float:
    """The median time of one call of `fn`, calling it for about `seconds`."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        fn()
        done = time.perf_counter()
        times.append(done - t)
        if done >= end:
            return statistics.median(times)


def machine_speed(seconds: float = 0.25) -> dict[str, float]:
    """How fast one core of this machine is now: SHA-256 of 4 KiB blocks in MB/s
    (the figure of `openssl speed -bytes 4096 sha256`) and a fixed piece of pure
    Python in µs (the interpreter, which bounds the service's workers). This VM's
    speed drifts by 15 % and more within an hour, and a figure in ms, such as a
    p99, moves with it: compare runs of different hours with these beside them.
    Taken on an idle machine, before and after a run."""
    sha = _median_call(_hash_blocks, seconds)
    unit = _median_call(_python_unit, seconds)
    return {
        "sha256_4k_mb_s": round(_BLOCKS * len(_BLOCK) / sha / 1e6),
        "python_unit_us": round(unit * 1e6, 1),
    }


def describe_speed(speed: dict[str, float]) -> str:
    return (
        f"SHA-256 {speed['sha256_4k_mb_s']:,.0f} MB/s (4 KiB blocks), "
        f"a unit of Python {speed['python_unit_us']:.1f} µs"
    )


def context() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_1_5_min": [round(load1, 2), round(load5, 2)],
        "python": platform.python_version(),
        "speed_at_start": machine_speed(),
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def save(
    name: str, started: dict[str, Any], data: dict[str, Any], directory: Path = RESULTS
) -> Path:
    """Write bench/results/<name>.json (or `directory`/<name>.json) and return its
    path; `started` is the `context()` taken when the run began. The machine's
    speed is taken again now, after the run."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    end = {"finished": finished, "speed_at_end": machine_speed()}
    doc = {"bench": name, "context": {**started, **end}, **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc
