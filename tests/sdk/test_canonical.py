"""Record-time checks and canonical bytes, without a server: everything the
server would refuse is refused at the call site, and the pure-Python and
hashcore paths write identical bytes (a property-based corpus)."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from agent_chain import InvalidEventError
from agent_chain.canonical import (
    MAX_DEPTH,
    PAYLOAD_LEVEL,
    jcs_hashcore,
    jcs_python,
    normalize_payload,
)
from agent_chain.records import event_line, hashed_bytes, parse_event_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashcore

from ..chain import event_hash
from ..support import ROOT

CONFORMANCE = ROOT / "tests" / "conformance" / "jcs"
SID = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b"
TS = "2026-01-15T09:30:00.250Z"
ZERO = "0" * 64

# Integers beyond 2^53-1 that are exactly how JCS writes a double.
big_doubles = (
    st.floats(min_value=2.0**53, max_value=1e21, exclude_max=True)
    .filter(lambda f: f.is_integer())
    .map(int)
    .filter(lambda n: str(n) == jcs_python(float(n)).decode())
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | big_doubles
    | big_doubles.map(lambda n: -n)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
)
keys = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)

CORPUS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@CORPUS
@given(json_values)
def test_pure_python_and_hashcore_write_the_same_bytes(value: Any) -> None:
    payload = normalize_payload({"v": value})
    pure = jcs_python(payload)
    assert jcs_hashcore(payload) == pure
    assert hashcore.canonicalize(pure) == pure  # already canonical for the server too


@CORPUS
@given(json_values, st.integers(0, 2**53 - 1))
def test_event_lines_and_hashes_agree_with_hashcore_and_the_oracle(value: Any, seq: int) -> None:
    payload = normalize_payload({"v": value, "k": ["x", 1]})
    hashed = hashed_bytes(SID, seq, "tool.call", TS, jcs_python(payload), ZERO)
    digest = hashcore.sha256_hex(hashed)
    record = {
        "session_id": SID,
        "seq": seq,
        "kind": "tool.call",
        "ts": TS,
        "payload": payload,
        "prev_hash": ZERO,
    }
    assert digest == event_hash(record)  # tests/chain.py: rfc8785 + hashlib
    line = event_line(hashed, digest)
    assert hashcore.canonicalize(json.dumps({**record, "hash": digest}).encode()) == line
    assert parse_event_line(line).hash == digest
    # The server accepts exactly this line as an event.
    batch = hashcore.verify_batch(b'{"events":[' + line + b"]}", 1)
    assert batch.hashes == [digest] and batch.records == [line]


def test_the_rfc8785_conformance_vectors() -> None:
    inputs = sorted((CONFORMANCE / "input").glob("*.json"))
    assert inputs
    for path in inputs:
        hex_text = (CONFORMANCE / "outhex" / f"{path.stem}.txt").read_text()
        want = bytes.fromhex("".join(hex_text.split()))
        value = normalize_payload({"v": json.loads(path.read_bytes(), parse_int=int)})["v"]
        assert jcs_python(value) == want, path.name
        assert jcs_hashcore(value) == want, path.name
    rows = (CONFORMANCE / "numbers.tsv").read_text().splitlines()
    for row in rows:
        bits, text = row.split("\t")
        f = struct.unpack(">d", bytes.fromhex(bits))[0]
        if math.isfinite(f):
            assert jcs_python(f).decode() == text, row
            assert jcs_hashcore(f).decode() == text, row


# ---- what record refuses, at the call site ------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    """A payload whose containers nest `levels` deep, the payload itself included."""
    inner: dict[str, Any] = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    return inner


def test_nesting_budget_is_counted_from_the_request_body() -> None:
    # {"events": [ {"payload": P} ]}: P is at level 4, so P may nest 61 levels.
    assert PAYLOAD_LEVEL == 4 and MAX_DEPTH == 64
    normalize_payload(nested(61))
    with pytest.raises(InvalidEventError) as caught:
        normalize_payload(nested(62))
    assert caught.value.rule == "depth"
    with pytest.raises(InvalidEventError, match=r"depth|deep"):
        normalize_payload({"l": [[[[]]]], "deep": nested(61)})
    # The server agrees at the boundary, on bodies it parses itself.
    for levels, ok in ((61, True), (62, False)):
        hashed = hashed_bytes(SID, 0, "k", TS, jcs_python(nested(levels)), ZERO)
        line = event_line(hashed, hashcore.sha256_hex(hashed))
        body = b'{"events":[' + line + b"]}"
        if ok:
            hashcore.verify_batch(body, 1)
        else:
            with pytest.raises(hashcore.BatchError) as refused:
                hashcore.verify_batch(body, 1)
            assert refused.value.code == "json_rule"


def test_a_cycle_is_refused_not_a_recursion_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidEventError) as caught:
        normalize_payload(loop)
    assert caught.value.rule == "depth"


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        ({"x": float("nan")}, "not_finite"),
        ({"x": float("inf")}, "not_finite"),
        ({"x": [-math.inf]}, "not_finite"),
        ({"x": "\ud800"}, "lone_surrogate"),
        ({"x": "\ud83d\ude02"}, "lone_surrogate"),  # two surrogates, not one character
        ({"\udfff": 1}, "lone_surrogate"),
        ({1: "x"}, "non_string_key"),
        ({"x": {None: 1}}, "non_string_key"),
        ({"x": 9007199254740993}, "integer_range"),
        ({"x": -9007199254740993}, "integer_range"),
        ({"x": 1152921504606846976}, "integer_range"),
        ({"x": 10**21}, "integer_range"),  # JCS writes that double 1e+21
        ({"x": 10**400}, "integer_range"),
        ({"x": b"bytes"}, "payload_type"),
        ({"x": {1, 2}}, "payload_type"),
        ({"x": object()}, "payload_type"),
    ],
)
def test_values_the_server_refuses(payload: dict[Any, Any], rule: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        normalize_payload(payload)
    assert caught.value.rule == rule
    assert caught.value.path is not None and caught.value.path.startswith("payload")


def test_integers_beyond_2_53_that_jcs_writes_exactly_are_accepted() -> None:
    for n in (374956584419848800, 9007199254740992, 100000000000000000000, -(2**60)):
        if jcs_python(float(n)).decode() != str(n):
            continue
        out = normalize_payload({"x": n})
        assert jcs_python(out) == f'{{"x":{n}}}'.encode()
        assert jcs_hashcore(out) == jcs_python(out)
    assert normalize_payload({"x": 374956584419848800})["x"] == 374956584419848800.0
    assert normalize_payload({"x": 2**53 - 1})["x"] == 2**53 - 1


def test_payload_must_be_a_mapping() -> None:
    for bad in ([1], "x", None, 3):
        with pytest.raises(InvalidEventError):
            normalize_payload(bad)
