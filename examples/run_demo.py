"""`make demo`: the golden path and the rejection path, end to end, in one command.

    .venv/bin/python examples/run_demo.py [--keep]

1. starts `python -m service serve` on a loopback port, on a fresh embedded
   PostgreSQL in a temp folder (or on DATABASE_URL when it is set);
2. creates an API key (`python -m service keys create`);
3. runs the LangChain demo agent (`python -m examples.langchain_demo`), which
   records through the SDK's callback handler and prints `session_id=<uuid>`;
4. shows what the database holds for the session: every event AUTHORITATIVE,
   and the CHAIN_SEAL records tiling them;
5. replays the session (`GET /v1/sessions/{id}/records`): in order, the same
   hashes as stored;
6. verifies it offline: `python -m service export` writes the evidence bundle,
   `python -m agent_chain verify` checks it with the client package alone;
7. shows the rejection: a batch whose payload is altered after hashing is
   refused with 400 hash_mismatch, and not one row of it is stored;
8. stops what it started (the server, and with it the embedded PostgreSQL).

Exit 0 only if every check held. Nothing leaves the machine: loopback only, a
scripted model, no API key, LangSmith tracing off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from agent_chain import AgentChainError, Client, RejectedBatchError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


class Demo:
    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="agent-chain-demo-"))
        self.data_dir = self.tmp / "data"
        self.external_db = os.environ.get("DATABASE_URL") or None
        self.env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
            self.env.pop(var, None)  # nothing may leave the machine
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.checks: list[tuple[str, bool]] = []

    # ---- output -------------------------------------------------------------------

    def step(self, title: str) -> None:
        print(f"\n=== {title}", flush=True)

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append((what, ok))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)
        return ok

    # ---- processes -----------------------------------------------------------------

    def service(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "service", *args, "--data-dir", str(self.data_dir)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start_server(self) -> None:
        where = "DATABASE_URL" if self.external_db else f"embedded PostgreSQL in {self.data_dir}"
        self.step(f"1. start the service on {self.url} ({where})")
        self.data_dir.mkdir(parents=True)
        log = (self.tmp / "serve.log").open("wb")
        self.server = subprocess.Popen(
            [
                *(PY, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(self.port)),
                *("--data-dir", str(self.data_dir)),
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 180  # a fresh machine runs initdb first
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.check(f"serve is ready (pid {self.server.pid})", True)
                    return
            time.sleep(0.2)
        print((self.tmp / "serve.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise RuntimeError("the service did not become ready")

    def stop_server(self) -> None:
        self.step("8. stop what the demo started")
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        if self.server is not None:
            self.check(f"serve stopped (exit {self.server.returncode})", True)
        if not self.external_db:
            from service.storage.embedded import EmbeddedPostgres

            pg = EmbeddedPostgres(self.data_dir / "pg")
            if pg.running():  # serve stops the one it started; make sure
                pg.stop()
            self.check("the embedded PostgreSQL is stopped", not pg.running())

    def database_url(self) -> str:
        if self.external_db:
            return self.external_db
        from service.storage.embedded import EmbeddedPostgres

        return EmbeddedPostgres(self.data_dir / "pg").dsn()

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.database_url())
            try:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
            finally:
                await conn.close()

        return asyncio.run(run())

    # ---- the steps -------------------------------------------------------------------

    def create_key(self) -> str:
        self.step("2. create an API key: python -m service keys create")
        done = self.service("keys", "create", "--tenant", "demo", "--scope", "ingest")
        done2 = self.service("keys", "create", "--tenant", "demo", "--scope", "read")
        if done.returncode != 0 or done2.returncode != 0:
            print(done.stderr + done2.stderr, file=sys.stderr)
            raise RuntimeError("keys create failed")
        self.read_key = done2.stdout.strip()
        key = done.stdout.strip()
        print(f"  ingest key {key[:21]}…   read key {self.read_key[:21]}…")
        return key

    def run_agent(self, key: str) -> str:
        self.step("3. run the LangChain demo agent: python -m examples.langchain_demo")
        done = subprocess.run(
            [
                *(PY, "-m", "examples.langchain_demo", "--url", self.url, "--api-key", key),
                *("--journal-dir", str(self.tmp / "journal")),
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in done.stdout.splitlines():
            print(f"  {line}")
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
        sid = next(
            (
                ln.split("=", 1)[1]
                for ln in done.stdout.splitlines()
                if ln.startswith("session_id=")
            ),
            "",
        )
        self.check("the agent ran; every event acknowledged under a verified seal", bool(sid))
        if not sid:
            raise RuntimeError("the demo agent failed")
        return sid

    def show_database(self, sid: str) -> list[asyncpg.Record]:
        self.step(f"4. what the database holds for session {sid}")
        rows = self.query(
            """SELECT seq, is_seal, kind, status::text AS status, hash, ts, record FROM records
               WHERE session_id = $1 ORDER BY seq, is_seal""",
            sid,
        )
        table = []
        for r in rows:
            rec = json.loads(bytes(r["record"]))
            extra = ""
            if r["is_seal"]:
                p = rec["payload"]
                extra = f"seals seq {p['first_seq']}..{r['seq']}, key {p['key_id']}"
            elif "name" in rec["payload"]:
                extra = str(rec["payload"]["name"])
            table.append([r["seq"], r["kind"], r["status"], r["hash"][:16] + "…", r["ts"], extra])
        _print_table(["seq", "kind", "status", "hash", "ts", "note"], table)
        events = [r for r in rows if not r["is_seal"]]
        seals = [json.loads(bytes(r["record"])) for r in rows if r["is_seal"]]
        self.check(
            f"{len(events)} events, seq 0..{len(events) - 1} without a gap",
            [r["seq"] for r in events] == list(range(len(events))) and len(events) > 0,
        )
        self.check("every record AUTHORITATIVE", {r["status"] for r in rows} == {"AUTHORITATIVE"})
        covered, prev_seal, tiles = 0, "0" * 64, bool(seals)
        hashes = {r["seq"]: r["hash"] for r in events}
        for seal in seals:
            tiles &= seal["payload"]["first_seq"] == covered
            tiles &= seal["payload"]["prev_seal"] == prev_seal
            tiles &= seal["prev_hash"] == hashes.get(seal["seq"])
            covered, prev_seal = seal["seq"] + 1, seal["hash"]
        self.check(
            f"{len(seals)} CHAIN_SEAL record(s) seal every event, each linked to the last",
            tiles and covered == len(events),
        )
        return rows

    def replay(self, sid: str, rows: Sequence[asyncpg.Record]) -> None:
        self.step(f"5. replay: GET /v1/sessions/{sid}/records")
        resp = httpx.get(
            f"{self.url}/v1/sessions/{sid}/records",
            headers={"Authorization": f"Bearer {self.read_key}"},
            timeout=30,
        )
        lines = resp.content.splitlines()
        (self.tmp / "replay.ndjson").write_bytes(resp.content)
        records = [json.loads(ln) for ln in lines]
        for rec in records:
            print(f"  seq {rec['seq']:>3}  {rec['kind']:<16} {rec['hash'][:16]}…")
        stored = [(r["seq"], r["hash"]) for r in rows]
        self.check(
            f"{resp.status_code}: {len(records)} records, in order, the hashes stored",
            resp.status_code == 200 and [(r["seq"], r["hash"]) for r in records] == stored,
        )

    def verify_offline(self, sid: str) -> None:
        self.step("6. verify offline: service export, then python -m agent_chain verify")
        bundle = self.tmp / "evidence.ndjson"
        done = self.service("export", sid, "--out", str(bundle))
        if not self.check(f"exported the evidence bundle to {bundle}", done.returncode == 0):
            print(done.stderr, file=sys.stderr)
            return
        verify = subprocess.run(
            [PY, "-m", "agent_chain", "verify", "--quiet", str(bundle)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in (verify.stdout + verify.stderr).splitlines():
            print(f"  | {line}")
        self.check("the offline verifier passes (exit 0)", verify.returncode == 0)

    def rejection(self, key: str) -> None:
        self.step("7. the rejection path: a payload altered after hashing")
        tamper = _AlterAfterHashing()
        errors: list[AgentChainError] = []
        with Client(
            self.url,
            key,
            journal_dir=self.tmp / "journal-tampered",
            on_error=errors.append,
            transport=tamper,
            keep_journal=True,
        ) as client:
            with client.session() as session:
                for i in range(5):
                    session.record("tool.call", {"i": i, "amount_chf": 7.9})
            report = client.flush(timeout=30)
        sid = session.session_id
        print(f"  session {sid}: 5 events recorded and hashed by the SDK")
        print(f"  the proxy changed {tamper.changed!r} in the batch")
        print(f"  POST /v1/ingest -> {tamper.status} {json.dumps(tamper.answer)}")
        err = report.last_error
        self.check(
            "the server refused it: 400 hash_mismatch",
            tamper.status == 400
            and isinstance(err, RejectedBatchError)
            and (err.status, err.code) == (400, "hash_mismatch"),
        )
        print(f"  the SDK quarantined the session: {report.stopped_sessions == (sid,)}")
        n = self.query("SELECT count(*) AS n FROM records WHERE session_id = $1", sid)[0]["n"]
        heads = self.query("SELECT count(*) AS n FROM sessions WHERE session_id = $1", sid)[0]
        print(f"  rows stored for session {sid}: {n} records, {heads['n']} session heads")
        self.check("zero rows stored from that batch", n == 0 and heads["n"] == 0)

    def run(self) -> int:
        try:
            self.start_server()
            key = self.create_key()
            sid = self.run_agent(key)
            rows = self.show_database(sid)
            self.replay(sid, rows)
            self.verify_offline(sid)
            self.rejection(key)
        except Exception as exc:
            self.check(f"the demo ran through ({type(exc).__name__}: {exc})", False)
        finally:
            with contextlib.suppress(Exception):
                self.stop_server()
        failed = [what for what, ok in self.checks if not ok]
        print()
        if failed:
            print(f"DEMO FAILED: {len(failed)} check(s) did not hold; files kept in {self.tmp}")
            return 1
        print(f"DEMO OK: all {len(self.checks)} checks held.")
        if self.keep:
            print(f"files kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return 0


class _AlterAfterHashing(httpx.BaseTransport):
    """A corrupting proxy: changes one payload of the first ingest body after
    the SDK hashed it, and keeps the server's answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.changed = ""
        self.status = 0
        self.answer: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/ingest" and not self.changed:
            old, new = b'"amount_chf":7.9,"i":3', b'"amount_chf":790,"i":3'
            body = request.read().replace(old, new, 1)
            self.changed = f"{old.decode()} -> {new.decode()}"
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = self.inner.handle_request(request)
            response.read()
            self.status = response.status_code
            with contextlib.suppress(ValueError):
                self.answer = json.loads(response.content)
            return response
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(row: list[str]) -> str:
        return "  " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    print(line(headers))
    print("  " + "-+-".join("-" * w for w in widths))
    for r in cells:
        print(line(r))
    print(f"  ({len(rows)} rows)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="examples/run_demo.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, bundle)")
    args = parser.parse_args(argv)
    # What the SDK reports (the rejection is logged loudly), in the demo's output.
    logging.basicConfig(
        stream=sys.stdout, level=logging.WARNING, format="  agent_chain %(levelname)s: %(message)s"
    )
    return Demo(args.keep).run()


if __name__ == "__main__":
    sys.exit(main())
