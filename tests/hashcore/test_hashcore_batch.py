"""verify_batch: the result, every rejection code with its index, and tampering."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785

import hashcore

from ..chain import OTHER_SID, SID, ZERO, body_of, event_hash, make_event, make_events

Events = list[dict[str, Any]]


def test_valid_batch() -> None:
    events = make_events(0, 5)
    batch = hashcore.verify_batch(body_of(events, ensure_ascii=False), 5)
    assert (batch.session_id, batch.first_seq, batch.last_seq, batch.count) == (SID, 0, 4, 5)
    assert batch.first_prev_hash == ZERO
    assert batch.last_hash == events[-1]["hash"]
    assert batch.seqs == [0, 1, 2, 3, 4]
    assert batch.kinds == ["tool.call"] * 5
    assert batch.ts == [e["ts"] for e in events]
    assert batch.hashes == [e["hash"] for e in events]
    assert batch.records == [rfc8785.dumps(e) for e in events]
    assert batch.records is batch.records  # built once
    assert len(batch) == 5


def test_batch_may_start_past_zero() -> None:
    events = make_events(7, 2, "ab" * 32)
    batch = hashcore.verify_batch(body_of(events, ensure_ascii=False), 10)
    assert (batch.first_seq, batch.first_prev_hash) == (7, "ab" * 32)


def rehash(event: dict[str, Any]) -> dict[str, Any]:
    event["hash"] = event_hash(event)
    return event


def set_member(i: int, member: str, value: Any) -> Callable[[Events], Any]:
    def mutate(events: Events) -> Any:
        events[i][member] = value
        return events

    return mutate


def drop_member(i: int, member: str) -> Callable[[Events], Any]:
    def mutate(events: Events) -> Any:
        del events[i][member]
        return events

    return mutate


def mixed(events: Events) -> Any:
    events[2]["session_id"] = OTHER_SID
    rehash(events[2])
    return events


def gap(events: Events) -> Any:
    return [events[0], events[2]]


def tampered(events: Events) -> Any:
    events[3]["payload"]["n"] = 99
    return events


def relinked(events: Events) -> Any:
    events[2]["prev_hash"] = "ab" * 32
    rehash(events[2])
    return events


def first_not_zero(events: Events) -> Any:
    events[0]["prev_hash"] = "ab" * 32
    rehash(events[0])
    return events


# (mutation, code, index, member)
CASES: list[tuple[Callable[[Events], Any], str, int | None, str | None]] = [
    (lambda e: [], "schema", None, "events"),
    (lambda e: e[0], "schema", None, "events"),  # an object where the array should be
    (set_member(1, "extra", 1), "schema", 1, "extra"),
    (drop_member(1, "ts"), "schema", 1, "ts"),
    (set_member(1, "session_id", SID.upper()), "schema", 1, "session_id"),
    (set_member(1, "session_id", SID.replace("-", "")), "schema", 1, "session_id"),
    (set_member(1, "seq", 1.5), "schema", 1, "seq"),
    (set_member(1, "seq", -1), "schema", 1, "seq"),
    (set_member(1, "seq", "1"), "schema", 1, "seq"),
    (set_member(1, "kind", ""), "schema", 1, "kind"),
    (set_member(1, "kind", "a b"), "schema", 1, "kind"),
    (set_member(1, "kind", "k" * 129), "schema", 1, "kind"),
    (set_member(1, "kind", "CHAIN_SEAL"), "reserved_kind", 1, "kind"),
    (set_member(1, "ts", "2023-02-29T00:00:00Z"), "schema", 1, "ts"),
    (set_member(1, "ts", "2024-01-01T00:00:00+00:00"), "schema", 1, "ts"),
    (set_member(1, "ts", "2024-01-01T00:00:61Z"), "schema", 1, "ts"),
    (set_member(1, "ts", "2024-01-01T00:00:00.1234567890Z"), "schema", 1, "ts"),
    (set_member(1, "payload", [1]), "schema", 1, "payload"),
    (set_member(1, "prev_hash", "AB" * 32), "schema", 1, "prev_hash"),
    (set_member(1, "hash", "ab"), "schema", 1, "hash"),
    (mixed, "mixed_sessions", 2, "session_id"),
    (gap, "seq_not_contiguous", 1, "seq"),
    (tampered, "hash_mismatch", 3, "hash"),
    (relinked, "broken_link", 2, "prev_hash"),
    (first_not_zero, "broken_link", 0, "prev_hash"),
]


@pytest.mark.parametrize(("mutate", "code", "index", "member"), CASES)
def test_rejections(
    mutate: Callable[[Events], Any], code: str, index: int | None, member: str | None
) -> None:
    events = make_events(0, 4)
    with pytest.raises(hashcore.BatchError) as info:
        hashcore.verify_batch(json.dumps({"events": mutate(events)}).encode(), 1000)
    err = info.value
    assert (err.code, err.index, err.member) == (code, index, member), err.detail
    assert isinstance(err, ValueError)


def test_body_level_errors() -> None:
    cases: list[tuple[bytes, str, int | None]] = [
        (b'{"events":[', "malformed_json", 0),
        (b'{"events":1,', "malformed_json", None),
        (b"[]", "schema", None),
        (b'{"events":[],"x":1}', "schema", None),
        (b"{}", "schema", None),
        (b'{"events":[{"a":1,"a":2}]}', "json_rule", 0),
        (b'{"events":[{}, {"payload":{"x":1e999}}]}', "json_rule", 1),
    ]
    for text, code, index in cases:
        with pytest.raises(hashcore.BatchError) as info:
            hashcore.verify_batch(text, 10)
        assert (info.value.code, info.value.index) == (code, index), text


def test_json_rule_names_rule_index_and_member() -> None:
    events = make_events(0, 3)
    text = body_of(events, ensure_ascii=False).replace(b'"n": 2', b'"n": 2, "n": 3')
    with pytest.raises(hashcore.BatchError) as info:
        hashcore.verify_batch(text, 10)
    err = info.value
    assert (err.code, err.index, err.member) == ("json_rule", 2, "payload")
    assert "duplicate_key" in err.detail
    assert "$.events[2].payload.n" in err.detail


def test_too_large() -> None:
    with pytest.raises(hashcore.BatchError) as info:
        hashcore.verify_batch(body_of(make_events(0, 3), ensure_ascii=False), 2)
    assert info.value.code == "too_large"


def test_hash_mismatch_reports_expected_and_got() -> None:
    events = make_events(0, 2)
    given = events[1]["hash"]
    events[1]["payload"]["msg"] = "changed"
    with pytest.raises(hashcore.BatchError) as info:
        hashcore.verify_batch(body_of(events, ensure_ascii=False), 10)
    assert info.value.got == given
    assert info.value.expected == event_hash(events[1])


def _flip(c: int) -> int:
    if c in b"09":
        return c ^ 0b1001 if c == ord("9") else c + 1
    return ord("b") if c == ord("a") else c + 1 if c != ord("z") and c != ord("Z") else c - 1


def test_any_tampered_character_is_caught() -> None:
    events = [make_event(0, ZERO, {"msg": "hello", "n": 12, "f": 2.5, "ok": True, "l": ["ab", 7]})]
    events.append(make_event(1, events[0]["hash"], {"msg": "world", "n": 3, "x": {"y": "z"}}))
    events.append(make_event(2, events[1]["hash"]))
    text = body_of(events, ensure_ascii=False)
    hashcore.verify_batch(text, 10)
    start = text.index(b'{"session_id"', text.index(b"},") + 1)
    end = text.index(b'"}', text.index(b'"hash"', start)) + 2
    assert json.loads(text[start:end]) == events[1]
    checked = 0
    for pos in range(start, end):
        c = text[pos]
        if not chr(c).isalnum():
            continue
        changed = bytearray(text)
        changed[pos] = _flip(c)
        assert changed[pos] != c
        with pytest.raises(hashcore.BatchError):
            hashcore.verify_batch(bytes(changed), 10)
        checked += 1
    assert checked > 200


def test_large_double_payload_is_hashed_as_jcs() -> None:
    event = make_event(0, ZERO, {"big": 3.749565844198488e17})
    batch = hashcore.verify_batch(body_of([event], ensure_ascii=False), 10)
    assert b"374956584419848800" in batch.records[0]
    assert batch.hashes == [event["hash"]]


def test_copy_of_events_not_mutated() -> None:
    events = make_events(0, 2)
    before = copy.deepcopy(events)
    hashcore.verify_batch(body_of(events, ensure_ascii=False), 10)
    assert events == before
