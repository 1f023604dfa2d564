"""The service against its own description: schemathesis generates requests from
`/openapi.json`, valid ones (positive) and invalid ones (negative), in every phase
(coverage, fuzzing, stateful through the links), runs every check on each answer
(no 500, only documented statuses, media types, headers and bodies, valid data
accepted, invalid data refused, 405 with Allow, auth not ignored, ...) and must
find nothing.

JSON Schema cannot say two things the service checks, so the positive cases are
completed as a client would before they are sent, keeping them valid by the schema:
an ingest batch gets real hashes and links (one session, consecutive seqs; PROTOCOL
§1-§3), and a listing cursor is one the API could have returned. Every replayed
line is also checked against the Record schema, its hash and JCS (schemathesis
has no NDJSON reader).

Bounded and seeded here; `make fuzz` runs the same with many more examples
(CHAIN_CONFORMANCE_EXAMPLES, CHAIN_CONFORMANCE_SEED).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from functools import partial
from typing import Any

import jsonschema_rs
import rfc8785
import schemathesis
import trio
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response as StResponse
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as st_events

from service.api.openapi import SPEC
from service.api.sessions import MAX_SEQ

from .chain import ZERO, event_hash
from .conftest import Server
from .support import MakeKey

EXAMPLES = int(os.environ.get("CHAIN_CONFORMANCE_EXAMPLES", "20"))
SEED = int(os.environ.get("CHAIN_CONFORMANCE_SEED", "20261130"))
STATEFUL_STEPS = int(os.environ.get("CHAIN_CONFORMANCE_STATEFUL_STEPS", "6"))

# schemathesis's defaults, and 413: the answer to more events than maxItems.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
REJECTIONS += ["429", "5xx"]

_RECORD = jsonschema_rs.validator_for(
    {"$ref": "#/components/schemas/Record", "components": SPEC["components"]}
)


# ---- what JSON Schema cannot say -------------------------------------------------------


def _exact_numbers(value: Any) -> Any:
    """`value` with every integer above 2^53-1 as the double it denotes, which is how
    a client that writes JCS sends it (PROTOCOL §2, the integer rule)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SEQ else float(value)
    if isinstance(value, dict):
        return {k: _exact_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact_numbers(v) for v in value]
    return value


def as_chain(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema-valid events made into a valid batch: the first event's session for all,
    consecutive seqs (from 0 when the first one's is even, so that most batches are
    stored, else from it, kept under 2^53), each hash computed, each linked to the one
    before (64 zeros before seq 0)."""
    first = events[0]
    start = 0 if first["seq"] % 2 == 0 else min(first["seq"], MAX_SEQ - len(events) + 1)
    prev = ZERO if start == 0 else first["prev_hash"]
    chain = []
    for i, event in enumerate(events):
        made = {
            **event,
            "session_id": first["session_id"],
            "seq": start + i,
            "payload": _exact_numbers(event["payload"]),
            "prev_hash": prev,
        }
        made["hash"] = prev = event_hash(made)
        chain.append(made)
    return chain


def issued_cursor(seed: str) -> str:
    """A cursor as the listing writes it (a keyset: creation time and session id)."""
    session_id = uuid.uuid5(uuid.NAMESPACE_URL, seed)
    raw = f"2026-01-01T00:00:00+00:00|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _positive(case: schemathesis.Case[Any], location: ParameterLocation) -> bool:
    meta = case.meta
    if meta is None:
        return False
    component = meta.components.get(location)
    return component is not None and component.mode.is_positive


def complete_valid_requests(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    """schemathesis `before_call` hook: complete positive cases as described above."""
    operation = f"{case.method.upper()} {case.path}"
    body: Any = case.body
    if (
        operation == "POST /v1/ingest"
        and _positive(case, ParameterLocation.BODY)
        and isinstance(body, dict)
        and isinstance(body.get("events"), list)
        and body["events"]
    ):
        completed: Any = {**body, "events": as_chain(body["events"])}
        case.body = completed
    query = case.query
    if (
        operation == "GET /v1/sessions"
        and _positive(case, ParameterLocation.QUERY)
        and isinstance(query, dict)
        and query.get("cursor")
    ):
        case.query = {**query, "cursor": issued_cursor(str(query["cursor"]))}


def check_replayed_lines(
    ctx: schemathesis.CheckContext, response: StResponse, case: schemathesis.Case[Any]
) -> None:
    """Every line of a replay is a Record of the schema, its hash recomputes, and it
    is the JCS of itself (PROTOCOL §5)."""
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code != 200 or not content_type.startswith("application/x-ndjson"):
        return
    assert response.content.endswith(b"\n") or response.content == b"", "no final newline"
    for number, line in enumerate(response.content.splitlines(), 1):
        errors = [e.message for e in _RECORD.iter_errors(json.loads(line))]
        assert not errors, f"line {number} is not a Record: {errors}"
        # Every number a double, as JCS reads it (PROTOCOL §6).
        record = json.loads(line, parse_int=float)
        assert event_hash(record) == record["hash"], f"line {number}: hash does not recompute"
        assert rfc8785.dumps(record) == line, f"line {number}: not its JCS"


# ---- the run ---------------------------------------------------------------------------------


def config(base_url: str, key: str, examples: int, seed: int) -> schemathesis.Config:
    generation = {"mode": "all", "max-examples": examples, "database": "none"}
    return schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "seed": seed,
            "workers": 1,
            "color": False,
            "request-timeout": 30,
            "auth": {"openapi": {"bearer": {"bearer": key}}},
            "generation": generation,
            "checks": {
                "enabled": True,
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
            },
        }
    )


def describe(event: st_events.ScenarioFinished) -> list[str]:
    """Every failed check of a scenario, with how to reproduce it."""
    found = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.status == Status.SUCCESS or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            steps = [step.curl for step in check.failure_info.steps] or [
                check.failure_info.code_sample
            ]
            found.append(
                f"[{event.phase.value}] {event.label} ({check.name}, case {case_id}): "
                f"{failure.title}\n{failure.message}\n" + "\n".join(steps)
            )
    return found or [f"[{event.phase.value}] {event.label}: {event.status.value}"]


def run_schemathesis(base_url: str, key: str, examples: int, seed: int) -> tuple[list[str], int]:
    """The problems found, and how many scenarios ran."""
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json", config=config(base_url, key, examples, seed)
    )
    problems: list[str] = []
    scenarios = 0
    for event in from_schema(schema).execute():
        if isinstance(event, st_events.ScenarioFinished):
            scenarios += 1
            if event.status in (Status.FAILURE, Status.ERROR):
                problems.extend(describe(event))
        elif isinstance(event, st_events.NonFatalError):
            problems.append(f"error in {event.label}: {event.info.title}\n{event.info}")
        elif isinstance(event, st_events.FatalError):
            problems.append(f"schemathesis failed: {event.exception!r}")
    return problems, scenarios


async def test_the_service_does_what_its_description_says(
    server: Server, make_key: MakeKey
) -> None:
    key = await make_key("acme", "ingest", "read")
    schemathesis.hook("before_call")(complete_valid_requests)
    schemathesis.check(check_replayed_lines)
    try:
        problems, scenarios = await trio.to_thread.run_sync(
            partial(run_schemathesis, server.url, key, EXAMPLES, SEED)
        )
    finally:
        schemathesis.hooks.unregister(complete_valid_requests)
        schemathesis.checks.CHECKS.unregister(check_replayed_lines.__name__)
    assert not problems, "\n\n".join(dict.fromkeys(problems))
    assert scenarios >= len(SPEC["paths"])
