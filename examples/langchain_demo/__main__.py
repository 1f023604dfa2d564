"""``python -m examples.langchain_demo``: runs the demo agent once, recording
through the LangChain handler, waits until every event is acknowledged under a
verified seal, and prints ``session_id=<uuid>``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from agent_chain import AgentChainError, Client
from agent_chain.langchain import AgentChainCallbackHandler

from .agent import QUESTION, run_agent, run_agent_async


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.langchain_demo")
    parser.add_argument("--url", default=os.environ.get("AGENT_CHAIN_URL", "http://127.0.0.1:8000"))
    parser.add_argument(
        "--api-key",
        default=os.environ.get("AGENT_CHAIN_API_KEY"),
        help="an API key with the ingest scope (default: $AGENT_CHAIN_API_KEY)",
    )
    parser.add_argument("--journal-dir", default=None, help="default: the per-user data folder")
    parser.add_argument("--async", dest="use_async", action="store_true", help="run with ainvoke")
    parser.add_argument("--timeout", type=float, default=30.0, help="flush timeout, seconds")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key (or AGENT_CHAIN_API_KEY) is required")

    errors: list[AgentChainError] = []
    client = Client(args.url, args.api_key, journal_dir=args.journal_dir, on_error=errors.append)
    try:
        with client.session() as session:
            handler = AgentChainCallbackHandler(session)
            print(f"question: {QUESTION}")
            if args.use_async:
                answer = asyncio.run(run_agent_async([handler]))
            else:
                answer = run_agent([handler])
            print(f"answer:   {answer}")
            recorded = session.next_seq
        report = client.flush(timeout=args.timeout)
        receipt = session.receipt()
    finally:
        client.close(timeout=5)
    print(
        f"events:   {recorded} recorded, {report.acknowledged} acknowledged, "
        f"{report.pending} pending; last verified seal: "
        + (f"seq {receipt.seq}, key {receipt.key_id}" if receipt else "none")
    )
    for err in errors:
        print(f"error:    {err}", file=sys.stderr)
    if handler.failures.count or not report.complete or receipt is None:
        print("the run's events are NOT all acknowledged", file=sys.stderr)
        return 1
    print(f"session_id={session.session_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
