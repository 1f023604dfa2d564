"""JSON values the server accepts (PROTOCOL §2), their RFC 8785 bytes and SHA-256.

`normalize` checks a Python value against every rule the server applies and
returns it in a form both canonicalizers write identically (integers beyond
2^53-1 that JCS can write exactly become the double they denote). `jcs` writes
it: with `hashcore` when it is importable, else with the pure-Python `rfc8785`;
the bytes are the same (the tests hold both to it).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

from .errors import InvalidEventError

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects, counted from the request body's root (§2)."""
PAYLOAD_LEVEL = 4
"""A payload's level in a request body: ``{"events": [ {"payload": {...}} ]}``:
the body is 1, ``events`` 2, the event 3, the payload 4. A payload may therefore
hold containers nested ``MAX_DEPTH - PAYLOAD_LEVEL`` = 60 levels below itself."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def _load_hashcore() -> Any:
    if os.environ.get("AGENT_CHAIN_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module("hashcore")
    except ImportError:
        return None
    if not all(hasattr(module, n) for n in ("canonicalize", "sha256_hex")):
        return None
    return module


_hashcore: Any = _load_hashcore()

BACKEND = "hashcore" if _hashcore is not None else "python"
"""Which implementation `jcs` and `sha256_hex` use in this process."""


def jcs_python(value: Any) -> bytes:
    """RFC 8785 bytes of a normalized value, in pure Python."""
    return rfc8785.dumps(value)


def jcs_hashcore(value: Any) -> bytes:
    """RFC 8785 bytes of a normalized value, through `hashcore.canonicalize`."""
    if _hashcore is None:
        raise RuntimeError("hashcore is not importable")
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    out: bytes = _hashcore.canonicalize(text.encode("utf-8"))
    return out


def jcs(value: Any) -> bytes:
    """RFC 8785 bytes of a value that went through `normalize`."""
    return jcs_hashcore(value) if _hashcore is not None else jcs_python(value)


def sha256_hex(data: bytes) -> str:
    if _hashcore is not None:
        out: str = _hashcore.sha256_hex(data)
        return out
    return hashlib.sha256(data).hexdigest()


def jcs_number(f: float) -> str:
    return rfc8785.dumps(f).decode("ascii")


def check_integer(n: int, path: str) -> int | float:
    """The amended integer rule (§2): beyond 2^53-1, only an integer whose
    literal (``str(n)``) is exactly how JCS writes the double it denotes; that
    double is returned. The rule is on the text: 374956584419848800 is accepted
    although the double is 374956584419848832, because JCS writes that double
    ``374956584419848800`` and every reader gets the literal back unchanged."""
    if -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
        return n
    try:
        f = float(n)
    except OverflowError:
        raise InvalidEventError(
            "integer_range", f"{n} overflows a double (PROTOCOL §2)", path
        ) from None
    if jcs_number(f) != str(n):
        raise InvalidEventError(
            "integer_range",
            f"integer {n} is beyond 2^53-1 and is not how JCS writes a double "
            f"(the nearest double is written {jcs_number(f)}); send it as a string",
            path,
        )
    return f


def normalize(value: Any, path: str, level: int) -> Any:
    """`value` checked against §2 as a JSON value at nesting `level` (its
    container, if it is one, sits at that level); returns plain dicts, lists,
    str, int, float, bool and None."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidEventError(
                "lone_surrogate",
                "string holds a lone surrogate (not valid UTF-8; write the real character)",
                path,
            )
        return str.__str__(value)
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):  # a bool subclass is not possible, numpy bools are
        return bool(value)
    if isinstance(value, int):
        return check_integer(int(value), path)
    if isinstance(value, float):
        f = float(value)
        if not math.isfinite(f):
            raise InvalidEventError("not_finite", f"{f} is not a JSON number", path)
        return f
    if isinstance(value, Mapping):
        if level > MAX_DEPTH:
            raise InvalidEventError(
                "depth",
                f"nested {level} levels deep in the request body; the limit is {MAX_DEPTH} "
                f"(a payload may nest {MAX_DEPTH - PAYLOAD_LEVEL} levels below itself)",
                path,
            )
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEventError(
                    "non_string_key", f"object key {k!r} is a {type(k).__name__}, not a str", path
                )
            if _SURROGATE.search(k):
                raise InvalidEventError(
                    "lone_surrogate", f"object key {k!r} holds a lone surrogate", path
                )
            out[str.__str__(k)] = normalize(v, _member_path(path, k), level + 1)
        return out
    if isinstance(value, list | tuple):
        if level > MAX_DEPTH:
            raise InvalidEventError(
                "depth",
                f"nested {level} levels deep in the request body; the limit is {MAX_DEPTH} "
                f"(a payload may nest {MAX_DEPTH - PAYLOAD_LEVEL} levels below itself)",
                path,
            )
        return [normalize(v, f"{path}[{i}]", level + 1) for i, v in enumerate(value)]
    raise InvalidEventError(
        "payload_type",
        f"{type(value).__name__} is not a JSON value "
        "(use dict, list, tuple, str, int, float, bool or None)",
        path,
    )


def _member_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def normalize_payload(payload: Any) -> dict[str, Any]:
    """A payload checked as the server will check it inside a request body."""
    if not isinstance(payload, Mapping):
        raise InvalidEventError(
            "payload_type", f"payload must be a dict, not {type(payload).__name__}", "payload"
        )
    out: dict[str, Any] = normalize(payload, "payload", PAYLOAD_LEVEL)
    return out
