"""Nothing that `record` returned is ever lost: a recording process SIGKILLed
mid-run, then a new client on the same journal → every such event is stored
exactly once and the chain verifies; the same with the server killed and
restarted while the recorder sends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent_chain import Client
from agent_chain.verifier import verify_chain

from ..support import ROOT, assert_whole_batches, python
from .conftest import Service

RECORDER = """
import sys, time
from agent_chain import Client
url, key, journal = sys.argv[1:4]
client = Client(url, key, journal_dir=journal, linger=0.02, backoff_base=0.05, backoff_max=0.3)
session = client.session()
print("session", session.session_id, flush=True)
i = 0
while True:
    seq, digest = session.record("step", {"i": i, "pad": "x" * 100})
    print(seq, digest, flush=True)
    i += 1
    time.sleep(0.002)  # a pace, not a measurement
"""


class Recorder:
    """The recording process and what it printed: (seq, hash) of every event
    `record` returned before it died."""

    def __init__(self, service: Service, key: str, journal: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECORDER, service.url, key, str(journal)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        assert first[0] == b"session", first
        self.session_id = first[1].decode()
        self.returned: dict[int, str] = {}

    def read_until(self, seq: int) -> None:
        assert self.proc.stdout is not None
        while max(self.returned, default=-1) < seq:
            line = self.proc.stdout.readline()
            assert line, "the recorder died"
            s, h = line.split()
            self.returned[int(s)] = h.decode()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        assert self.proc.stdout is not None
        with self.proc.stdout:
            rest = self.proc.stdout.read()
        for line in rest.splitlines():
            parts = line.split()
            if len(parts) == 2 and len(parts[1]) == 64:  # the last line may be cut
                self.returned[int(parts[0])] = parts[1].decode()


def wait_stored(service: Service, session_id: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while service.stored(session_id).event_count < at_least:
        assert time.monotonic() < deadline, "the server never stored the events"
        time.sleep(0.05)


def resume_and_check(service: Service, key: str, journal: Path, rec: Recorder) -> None:
    with Client(service.url, key, journal_dir=journal, backoff_max=0.3) as client:
        assert rec.session_id in {s.session_id for s in client.status().sessions}
        report = client.flush(timeout=60)
        assert report.complete, report
    stored = service.stored(rec.session_id)
    assert_whole_batches(stored)  # each seq once, every batch with its seal
    for seq, digest in rec.returned.items():
        assert stored.events.get(seq) == digest, seq
    assert stored.event_count >= len(rec.returned)
    lines = service.replay(key, rec.session_id)
    assert verify_chain(lines, service.public_keys(), backend="python").ok
    # Acknowledged and closed: the journal is gone.
    assert not (journal / f"{rec.session_id}.events.ndjson").exists()


def test_recorder_killed_mid_run(service: Service, api_key: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rec = Recorder(service, api_key, journal)
    try:
        rec.read_until(50)
        wait_stored(service, rec.session_id, 1)  # some sent, more being recorded
        rec.read_until(max(rec.returned) + 100)
    finally:
        rec.kill()
    assert len(rec.returned) > 150
    resume_and_check(service, api_key, journal, rec)


def test_server_killed_and_restarted_while_sending(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    rec = Recorder(service, api_key, journal)
    try:
        rec.read_until(20)
        wait_stored(service, rec.session_id, 1)
        service.kill()  # SIGKILL: whatever batch was in flight is lost or stored whole
        rec.read_until(max(rec.returned) + 200)  # recorded while the server is down
        service.start()
        target = max(rec.returned)
        wait_stored(service, rec.session_id, target + 1)  # the recorder caught up
        rec.read_until(target + 50)
    finally:
        rec.kill()
    resume_and_check(service, api_key, journal, rec)
    assert os.path.isdir(journal)


EXITING = """
import sys
from agent_chain import Client
url, key, journal = sys.argv[1:4]
client = Client(url, key, journal_dir=journal, linger=60)  # only exit can flush this
session = client.session()
print(session.session_id, flush=True)
for i in range(20):
    session.record("step", {"i": i})
"""


def test_interpreter_exit_flushes_what_was_recorded(
    service: Service, api_key: str, tmp_path: Path
) -> None:
    done = python("-c", EXITING, service.url, api_key, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "thread" not in done.stderr, done.stderr  # atexit starts none
    sid = done.stdout.strip()
    stored = service.stored(sid)
    assert stored.event_count == 20
    assert_whole_batches(stored)
