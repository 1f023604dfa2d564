"""The exported code lists (BATCH_ERROR_CODES, CHAIN_PROBLEM_REASONS): each code
is produced by some input; and the PROTOCOL §2 rule for integer literals above
2^53-1, whose refusals are `json_rule` / `integer_range`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785

import hashcore

from ..chain import OTHER_SID, SEAL_TS, SID, ZERO, body_of, event_hash, make_event, make_events
from .sealed import make_chain

A = hashcore.Signer(bytes(range(32)))
B = hashcore.Signer(b"\x07" * 32)
KEYS = {A.key_id: A.public_key}


def rehashed(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    event = {**event, **changes}
    event["hash"] = event_hash(event)
    return event


def batch_code(body: bytes, max_events: int = 10) -> str:
    with pytest.raises(hashcore.BatchError) as info:
        hashcore.verify_batch(body, max_events)
    return info.value.code


def batch_with_other_session() -> bytes:
    first = make_events(0, 1)
    return body_of(first + make_events(1, 1, first[0]["hash"], sid=OTHER_SID))


def tampered_batch() -> bytes:
    events = make_events(0, 2)
    events[1]["payload"]["n"] = 99
    return body_of(events)


BATCH_CASES: dict[str, Callable[[], str]] = {
    "malformed_json": lambda: batch_code(b'{"events":['),
    "json_rule": lambda: batch_code(b'{"events":[{"a":1,"a":2}]}'),
    "schema": lambda: batch_code(b"{}"),
    "too_large": lambda: batch_code(body_of(make_events(0, 3)), max_events=2),
    "reserved_kind": lambda: batch_code(
        body_of([rehashed(make_event(0, ZERO), kind="CHAIN_SEAL")])
    ),
    "mixed_sessions": lambda: batch_code(batch_with_other_session()),
    "seq_not_contiguous": lambda: batch_code(body_of(make_events(0, 3)[::2])),
    "hash_mismatch": lambda: batch_code(tampered_batch()),
    "broken_link": lambda: batch_code(body_of([make_event(0, "ab" * 32)])),
}


def reason(lines: list[bytes]) -> str:
    report = hashcore.verify_chain(lines, KEYS)
    assert report.problem is not None
    return report.problem.reason


def edited(line: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    record = json.loads(line)
    edit(record)
    return rfc8785.dumps(record)


def flip_signature(record: dict[str, Any]) -> None:
    sig = record["signature"]
    record["signature"] = ("1" if sig[0] == "0" else "0") + sig[1:]


def seal_reason(prev_seal: str | None, head: str | None) -> str:
    lines = make_chain(A, [2, 2])
    second = json.loads(lines[5])
    lines[5] = A.seal(
        SID,
        3,
        2,
        second["payload"]["prev_seal"] if prev_seal is None else prev_seal,
        second["prev_hash"] if head is None else head,
        SEAL_TS,
    ).record
    return reason(lines)


def replaced(lines: list[bytes], at: int, line: bytes) -> list[bytes]:
    return [*lines[:at], line, *lines[at + 1 :]]


def chain_cases() -> dict[str, Callable[[], str]]:
    lines = make_chain(A, [3, 2])
    events = make_events(0, 2)
    return {
        "malformed_json": lambda: reason([b"{", *lines]),
        "json_rule": lambda: reason([b'{"a":1,"a":2}', *lines]),
        "schema": lambda: reason([b'{"a":1}', *lines]),
        "reserved_kind": lambda: reason(
            [rfc8785.dumps(rehashed(make_event(0, ZERO), kind="CHAIN_X"))]
        ),
        "mixed_sessions": lambda: reason(make_chain(A, [2]) + make_chain(A, [1], sid=OTHER_SID)),
        "hash_mismatch": lambda: reason(replaced(lines, 1, lines[1].replace(b"hello", b"jello"))),
        "seq_gap": lambda: reason([lines[0], *lines[2:]]),
        "broken_link": lambda: reason(
            [rfc8785.dumps(events[0]), rfc8785.dumps(rehashed(events[1], prev_hash="ab" * 32))]
        ),
        "seal_coverage": lambda: reason([*lines[:2], *lines[3:]]),
        "seal_prev_hash": lambda: seal_reason(None, "ee" * 32),
        "seal_link": lambda: seal_reason(ZERO, None),
        "unknown_key": lambda: reason(make_chain(B, [2])),
        "bad_signature": lambda: reason(replaced(lines, 3, edited(lines[3], flip_signature))),
        "not_canonical": lambda: reason(
            replaced(lines, 0, json.dumps(json.loads(lines[0])).encode())
        ),
        "empty": lambda: reason([]),
        "last_not_seal": lambda: reason(lines[:-1]),
    }


# A seal must carry the seq of the last event and follow the previous seal, so
# a chain that ends with a valid seal is always covered: this end check is a
# guard that no input reaches (events after the last seal give last_not_seal).
UNREACHABLE_REASONS = {"uncovered_events"}


@pytest.mark.parametrize("codes", [hashcore.BATCH_ERROR_CODES, hashcore.CHAIN_PROBLEM_REASONS])
def test_code_lists_are_unique_strings(codes: tuple[str, ...]) -> None:
    assert isinstance(codes, tuple)
    assert codes
    assert len(set(codes)) == len(codes)
    assert all(isinstance(c, str) and c and c == c.strip().lower() for c in codes)


def test_batch_error_codes_match_the_documented_set() -> None:
    assert set(hashcore.BATCH_ERROR_CODES) == set(BATCH_CASES)


def test_chain_problem_reasons_match_the_documented_set() -> None:
    assert set(hashcore.CHAIN_PROBLEM_REASONS) == set(chain_cases()) | UNREACHABLE_REASONS


@pytest.mark.parametrize("code", hashcore.BATCH_ERROR_CODES)
def test_every_batch_error_code_is_produced(code: str) -> None:
    assert BATCH_CASES[code]() == code


@pytest.mark.parametrize(
    "code", [c for c in hashcore.CHAIN_PROBLEM_REASONS if c not in UNREACHABLE_REASONS]
)
def test_every_chain_problem_reason_is_produced(code: str) -> None:
    assert chain_cases()[code]() == code


# PROTOCOL §2: an integer literal above 2^53-1 is accepted only if it is how
# JCS writes the double it denotes.
ACCEPTED = [
    "374956584419848800",
    "9007199254740992",
    "-374956584419848800",
    "-9007199254740992",
    "100000000000000000000",
]
REFUSED = [
    "9007199254740993",
    "1152921504606846976",
    "-9007199254740993",
    "-1152921504606846976",
    "123456789012345678901234567890",
    "1" + "0" * 400,  # overflows a double
    "-1" + "0" * 400,
]


def batch_with_number(literal: str) -> tuple[bytes, dict[str, Any]]:
    """A one-event body whose payload holds `literal` verbatim, hashed as the
    double it denotes (rfc8785 refuses Python ints above 2^53-1)."""
    event = make_event(0, ZERO, {"n": float(literal)} if len(literal) < 300 else {"n": 0})
    text = body_of([{**event, "payload": {"n": "@N@"}}]).replace(b'"@N@"', literal.encode())
    return text, event


@pytest.mark.parametrize("literal", ACCEPTED)
def test_large_integer_written_as_jcs_is_accepted(literal: str) -> None:
    assert hashcore.canonicalize(literal.encode()) == literal.encode()
    assert hashcore.canonicalize(b'{"n":%s}' % literal.encode()) == b'{"n":%s}' % literal.encode()
    text, event = batch_with_number(literal)
    batch = hashcore.verify_batch(text, 1)
    assert batch.hashes == [event["hash"]]
    assert b'"payload":{"n":%s}' % literal.encode() in batch.records[0]


@pytest.mark.parametrize("literal", REFUSED)
def test_large_integer_not_written_as_jcs_is_refused(literal: str) -> None:
    with pytest.raises(hashcore.JsonRuleError) as info:
        hashcore.canonicalize(b"[%s]" % literal.encode())
    assert (info.value.rule, info.value.path) == ("integer_range", "$[0]")
    text, _ = batch_with_number(literal)
    with pytest.raises(hashcore.BatchError) as batch_info:
        hashcore.verify_batch(text, 1)
    err = batch_info.value
    assert (err.code, err.index, err.member) == ("json_rule", 0, "payload")
    assert "integer_range" in err.detail


def test_fractions_and_exponents_are_unaffected() -> None:
    assert hashcore.canonicalize(b"9007199254740993.0") == b"9007199254740992"
    assert hashcore.canonicalize(b"1152921504606846976e0") == b"1152921504606847000"
    with pytest.raises(hashcore.JsonRuleError) as info:
        hashcore.canonicalize(b"1e400")
    assert info.value.rule == "number_overflow"
