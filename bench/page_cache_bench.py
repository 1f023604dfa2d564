"""What this machine charges for writing into pages the page cache has not held before.

Run on purpose (not a test):

    python bench/page_cache_bench.py                 # 8 GiB, ~1 min
    python bench/page_cache_bench.py --quick         # 2 GiB, may stop short of the change

PostgreSQL writes every page it evicts and every WAL block with an 8 KiB
`pwrite` into the kernel's page cache. On most machines that costs a few
microseconds of CPU whatever the file. On a VM whose balloon reports free pages
to its host (virtio-balloon free page reporting), a page the guest freed and
reported is given back to the host; the first write into it faults on the host,
which has to find and zero memory. Pages freed recently and not yet reported
are cheap; once they run out, every new page of page cache costs that fault.
The tail of sustained load moves with this (docs/performance.md, "Sustained load
is worse").

This writes a new file in 8 KiB `pwrite`s, 256 MiB at a time, and prints the CPU
per write of each 256 MiB against the baseline of this run: overwriting the
first 256 MiB again right after (pages already in the page cache). Figures also go to
bench/results/page_cache.json. The file is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import results
from processes import ROOT

BLOCK = 8192
CHUNK = 256 << 20
# A chunk this many times the baseline counts as "paying the host".
SLOW = 3.0


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_chunk(fd: int, index: int, block: bytes) -> float:
    """CPU microseconds per 8 KiB write, over one 256 MiB chunk at `index`."""
    n = CHUNK // BLOCK
    start = cpu_seconds()
    base = index * CHUNK
    for i in range(n):
        os.pwrite(fd, block, base + i * BLOCK)
    return 1e6 * (cpu_seconds() - start) / n


def free_page_reporting() -> str:
    """Whether the kernel has free page reporting loaded (a guest's balloon driver)."""
    order = Path("/sys/module/page_reporting/parameters/page_reporting_order")
    if not order.exists():
        return "not loaded"
    return f"on (order {order.read_text().strip()})"


def mem_free_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=8.0, help="GiB of new file to write")
    parser.add_argument("--quick", action="store_true", help="2 GiB")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write it"
    )
    args = parser.parse_args()
    ctx = results.context()
    gigabytes = 2.0 if args.quick else args.gigabytes
    chunks = max(2, int(gigabytes * (1 << 30)) // CHUNK)
    block = os.urandom(BLOCK)
    print(f"free page reporting: {free_page_reporting()}; MemFree {mem_free_mib():,} MiB")
    per_chunk: list[float] = []
    with tempfile.NamedTemporaryFile(dir=args.dir, prefix="page-cache-bench-") as f:
        fd = f.fileno()
        for index in range(chunks):
            per_chunk.append(write_chunk(fd, index, block))
            print(
                f"  {(index + 1) * CHUNK / (1 << 30):5.2f} GiB written: "
                f"{per_chunk[-1]:6.1f} us CPU per 8 KiB write",
                flush=True,
            )
            if index == 0:  # the same pages again, while they are in the page cache
                baseline = write_chunk(fd, 0, block)
    slow = [i for i, us in enumerate(per_chunk) if us > SLOW * baseline]
    onset_gib = slow[0] * CHUNK / (1 << 30) if slow else None
    print(f"\nbaseline (overwriting cached pages): {baseline:.1f} us per 8 KiB write")
    print(f"first 256 MiB of new pages: {per_chunk[0] / baseline:.2f}x the baseline")
    print(f"last 256 MiB of new pages:  {per_chunk[-1] / baseline:.2f}x the baseline")
    if onset_gib is None:
        print(f"no chunk over {SLOW:.0f}x the baseline in {chunks * CHUNK / (1 << 30):.2f} GiB")
    else:
        later = per_chunk[slow[0] :]
        print(
            f"over {SLOW:.0f}x the baseline after {onset_gib:.2f} GiB of new pages: "
            f"{sum(later) / len(later):.1f} us per write from there "
            f"({sum(later) / len(later) / baseline:.1f}x)"
        )
    path = results.save(
        "page_cache_quick" if args.quick else "page_cache",
        ctx,
        {
            "free_page_reporting": free_page_reporting(),
            "block_bytes": BLOCK,
            "chunk_bytes": CHUNK,
            "baseline_us_per_write": round(baseline, 2),
            "us_per_write_by_chunk": [round(us, 2) for us in per_chunk],
            "slow_after_gib": onset_gib,
        },
    )
    print(f"figures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
