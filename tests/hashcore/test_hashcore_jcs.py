"""canonicalize: RFC 8785 vectors, number formatting, I-JSON rules, and a
differential test against the rfc8785 package."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

import hashcore

# RFC 8785 vectors, kept in the repository (see SOURCE.md there for their origin).
JCS = Path(__file__).resolve().parents[1] / "conformance" / "jcs"


@pytest.mark.parametrize("name", sorted(p.name for p in (JCS / "input").iterdir()))
def test_conformance_vectors(name: str) -> None:
    want = (JCS / "output" / name).read_bytes()
    assert hashcore.canonicalize((JCS / "input" / name).read_bytes()) == want


def test_conformance_vectors_present() -> None:
    assert len(list((JCS / "input").iterdir())) >= 6


def test_numbers_tsv() -> None:
    lines = [ln for ln in (JCS / "numbers.tsv").read_text().splitlines() if ln.strip()]
    assert len(lines) > 1000
    for line in lines:
        bits, want = line.split("\t")
        (value,) = struct.unpack(">d", bytes.fromhex(bits))
        assert hashcore.canonicalize(repr(value).encode()).decode() == want, bits


RULES: list[tuple[bytes, str, str]] = [
    (b'{"a":"\xff"}', "utf8", "$.a"),
    (b"[1,\xc3\x28]", "utf8", "$[1]"),
    (rb'{"a":["\ud800"]}', "lone_surrogate", "$.a[0]"),
    (rb'"\udc00"', "lone_surrogate", "$"),
    (rb'{"k\ud83d":1}', "lone_surrogate", "$"),
    (b'{"a":{"b":1,"b":2}}', "duplicate_key", "$.a.b"),
    (rb'{"b":1,"a":2,"\u0062":3}', "duplicate_key", "$.b"),
    (b"[1e309]", "number_overflow", "$[0]"),
    (b'{"x":-2e308}', "number_overflow", "$.x"),
    (b'{"n":9007199254740993}', "integer_range", "$.n"),
    (b"-9007199254740993", "integer_range", "$"),
    (b"[" * 65 + b"]" * 65, "depth", "$" + "[0]" * 64),
    (b'{"a":1,}', "malformed_json", "$"),
    (b"NaN", "malformed_json", "$"),
    (b"[Infinity]", "malformed_json", "$[0]"),
    (b"01", "malformed_json", "$"),
    (b"", "malformed_json", "$"),
    (b'"tab\there"', "malformed_json", "$"),
]


@pytest.mark.parametrize(("text", "rule", "path"), RULES)
def test_rules_rejected_with_rule_and_path(text: bytes, rule: str, path: str) -> None:
    with pytest.raises(hashcore.JsonRuleError) as info:
        hashcore.canonicalize(text)
    assert (info.value.rule, info.value.path) == (rule, path)
    assert isinstance(info.value, ValueError)
    assert rule in str(info.value)


def test_depth_limit_is_64() -> None:
    assert hashcore.canonicalize(b"[" * 64 + b"]" * 64) == b"[" * 64 + b"]" * 64
    assert hashcore.canonicalize(b'{"a":' * 64 + b"1" + b"}" * 64).startswith(b'{"a":')


def test_edge_values() -> None:
    assert hashcore.canonicalize(b" -0 ") == b"0"
    assert hashcore.canonicalize(b"9007199254740991") == b"9007199254740991"
    assert hashcore.canonicalize(b"374956584419848800.0") == b"374956584419848800"
    assert hashcore.canonicalize(b"1e21") == b"1e+21"
    assert hashcore.canonicalize(rb'"\u001f\/\u00e9"') == '"\\u001f/é"'.encode()


def test_sha256_hex() -> None:
    for data in (b"", b"abc", b"x" * 100_000):
        assert hashcore.sha256_hex(data) == hashlib.sha256(data).hexdigest()


SAFE = 2**53 - 1
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ue000", "\U0001f600", "\uffff", "\U00010000", "a", "é", "\x7f", ""]),
)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-7, max_value=1e-5),
    st.floats(min_value=1e20, max_value=1e22),
    st.floats(min_value=-1e22, max_value=-1e20),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-SAFE, max_value=SAFE),
    st.sampled_from([SAFE, -SAFE, 0, 2**53 * 1.0, 1e21, 1e-6, 5e-7]),
    floats,
    st.text(),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(doc=documents, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_matches_rfc8785(doc: Any, ascii_only: bool, indent: int | None) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    assert hashcore.canonicalize(text) == rfc8785.dumps(doc)


def test_keys_sort_by_utf16() -> None:
    text = '{"\ue000":1,"\U0001f600":2,"a":3}'.encode()
    assert hashcore.canonicalize(text) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()


def test_vectors_are_in_the_repository() -> None:
    tests = Path(__file__).resolve().parents[1]
    assert JCS.is_relative_to(tests), JCS
    inputs = sorted(p.stem for p in (JCS / "input").glob("*.json"))
    assert len(inputs) >= 6, inputs
    assert sorted(p.stem for p in (JCS / "output").glob("*.json")) == inputs
    assert sorted(p.stem for p in (JCS / "outhex").glob("*.txt")) == inputs
    for name in inputs:
        hexed = (JCS / "outhex" / f"{name}.txt").read_text()
        assert bytes.fromhex(hexed) == (JCS / "output" / f"{name}.json").read_bytes(), name
    assert (JCS / "numbers.tsv").is_file()
