"""`python -m agent_chain verify FILE`: the auditor's offline check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import audit


def _progress(records: int, done: int, total: int) -> None:
    if total:
        print(
            f"\r{records:,} records verified ({100 * done // total}%)",
            end="",
            file=sys.stderr,
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_chain",
        description="Offline tools of the agent-chain client (no server, no database).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser(
        "verify",
        help="check an evidence bundle or a client journal (PROTOCOL §6)",
        description="Checks an evidence bundle (from the service's export) against the keys "
        "in its header, or a client journal (*.events.ndjson, with its seals and keys "
        "beside it). Exit 0: every record, link, seal and signature holds; 1: something "
        "does not (the first failure is named); 2: a journal that holds but has events "
        "the server has not sealed yet.",
    )
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--keys",
        type=Path,
        help='a JSON file {"keys": [{key_id, public_key}, ...]} (as GET /v1/keys returns) '
        "to use instead of the keys recorded beside a journal",
    )
    verify.add_argument(
        "--backend",
        choices=("auto", "python", "hashcore"),
        default="auto",
        help="the chain verifier: hashcore when importable (auto), or pure Python",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    path: Path = args.file
    if not path.is_file():
        print(f"{path}: no such file", file=sys.stderr)
        return 1
    if audit.is_bundle(path):
        report = audit.verify_bundle(
            path, progress=None if args.quiet else _progress, backend=args.backend
        )
        if not args.quiet:
            print(file=sys.stderr)
        print(report.text())
        return 0 if report.ok else 1
    keys = None
    if args.keys is not None:
        keys = audit.keys_from_listing(json.loads(args.keys.read_bytes()))
    try:
        jreport = audit.verify_journal(path, public_keys=keys, backend=args.backend)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(jreport.text())
    return jreport.exit_code
