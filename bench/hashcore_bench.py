"""Throughput of hashcore.verify_batch against pure-Python and orjson equivalents.

Run on purpose (not a test), with a release build of hashcore installed:

    python bench/hashcore_bench.py            # ~15 s
    python bench/hashcore_bench.py --quick    # ~3 s, indicative only

All ratios are measured in the same run, on the same generated batches
(bench/workload.py). The pure-Python baseline is bench/reference.py, the
validator the conventional server of the ingest bench runs; it must return the
same records as hashcore, byte for byte. Figures also go to
bench/results/hashcore.json (hashcore_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable

import orjson
import reference
import results
from processes import ROOT
from workload import EVENTS, big_payload, client_batch, small_payload

import hashcore


def pure_python(body: bytes, max_events: int) -> list[bytes]:
    """The checks of verify_batch with json + rfc8785 + hashlib."""
    return reference.verify(body, max_events).records


def orjson_shortcut(body: bytes, max_events: int) -> list[str]:
    """Parse and hash sorted-key (non-canonical) bytes; checks nothing else."""
    events = orjson.loads(body)["events"]
    hashes = []
    for ev in events:
        given = ev.pop("hash")
        hashes.append(hashlib.sha256(orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)).hexdigest())
        ev["hash"] = given
    return hashes


def native(body: bytes, max_events: int) -> list[bytes]:
    return hashcore.verify_batch(body, max_events).records


def native_bare(body: bytes, max_events: int) -> object:
    return hashcore.verify_batch(body, max_events)


def timeit(
    fn: Callable[[bytes, int], object], bodies: list[bytes], min_seconds: float = 1.0
) -> float:
    """Best seconds per batch over repeated rounds, after one untimed round."""
    for b in bodies:
        fn(b, 1000)
    best = float("inf")
    spent = 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        for b in bodies:
            fn(b, 1000)
        dt = time.perf_counter() - t0
        spent += dt
        best = min(best, dt / len(bodies))
    return best


def openssl_sha256_bytes_per_s() -> float | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "speed", "-bytes", "8192", "-seconds", "2", "sha256"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("sha256"):
            return float(line.split()[-1].rstrip("k")) * 1000
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing rounds")
    args = parser.parse_args()
    ctx = results.context()
    scale = 0.15 if args.quick else 1.0
    cases = [("~300 B payloads", small_payload), ("~4 KB payloads", big_payload)]
    sha_rate = openssl_sha256_bytes_per_s()
    figures: dict[str, object] = {
        "events_per_batch": EVENTS,
        "openssl_sha256_bytes_per_s": sha_rate,
        "quick": args.quick,
        "cases": {},
    }
    for name, payload in cases:
        bodies = [client_batch(payload, seed) for seed in range(5)]
        for b in bodies:
            assert native(b, 1000) == pure_python(b, 1000), "implementations disagree"
        size = sum(map(len, bodies)) / len(bodies)
        per_payload = (size - 2) / EVENTS - 250
        print(f"\n== {EVENTS} events/batch, {name}")
        print(f"   body {size / 1024:.1f} KiB, payload ≈{per_payload:.0f} B")
        timings = {}
        for label, fn in [
            ("hashcore.verify_batch", native_bare),
            ("hashcore.verify_batch + .records", native),
            ("orjson + hashlib (no checks)", orjson_shortcut),
            ("json + rfc8785 + hashlib", pure_python),
        ]:
            t = timeit(fn, bodies, (0.5 if fn is pure_python else 1.0) * scale)
            timings[label] = t
            print(f"{label:36s} {EVENTS / t:12,.0f} events/s {size / t / 1e6:9.1f} MB/s")
        ours = timings["hashcore.verify_batch + .records"]
        print(f"speed-up vs pure Python:    {timings['json + rfc8785 + hashlib'] / ours:6.1f}x")
        print(f"speed-up vs orjson+hashlib: {timings['orjson + hashlib (no checks)'] / ours:6.2f}x")
        case: dict[str, object] = {
            "body_bytes": round(size),
            "events_per_s": {k: round(EVENTS / t) for k, t in timings.items()},
            "mb_per_s": {k: round(size / t / 1e6, 1) for k, t in timings.items()},
            "over_pure_python": round(timings["json + rfc8785 + hashlib"] / ours, 2),
            "over_orjson": round(timings["orjson + hashlib (no checks)"] / ours, 3),
        }
        if payload is big_payload and sha_rate:
            print(
                f"fraction of `openssl speed sha256` (8 KiB blocks, {sha_rate / 1e6:.0f} MB/s): "
                f"{size / ours / sha_rate:.2f}"
            )
            case["fraction_of_openssl_sha256"] = round(size / ours / sha_rate, 3)
        cases_out = figures["cases"]
        assert isinstance(cases_out, dict)
        cases_out[name] = case
    path = results.save("hashcore_quick" if args.quick else "hashcore", ctx, figures)
    print(f"\nfigures: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
