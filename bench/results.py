"""Where the benches put their figures: bench/results/<name>.json (gitignored).

Every file carries the run's context: when, the exact command, the commit, the
machine (cores, load average before the run) and the versions that matter, so
that a figure can be traced back to what produced it. bench/plots.py draws the
curves from these files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
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
    path; `started` is the `context()` taken when the run began."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    doc = {"bench": name, "context": {**started, "finished": finished}, **data}
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
