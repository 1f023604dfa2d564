"""Arbitrary Python values (framework objects, UUIDs, messages, spans'
attributes) turned into payload values that `Session.record` accepts.

`record` refuses, at the call site, anything the server would refuse (PROTOCOL
§2). The integrations record objects they do not control, so they convert
first: UUIDs, datetimes, enums, paths and decimals become strings, pydantic
models and dataclasses their fields, bytes base64, sets sorted lists; object
keys become strings; NaN and the infinities, and integers the protocol refuses,
become strings; lone surrogates are written as ``\\udXXX`` text; anything else
its ``repr``. Nesting deeper than the protocol allows is cut (as ``repr``), and
`shrink` cuts long strings and lists when an event would exceed the size cap.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import math
import re
import uuid
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from . import canonical
from .errors import InvalidEventError

MAX_DEPTH = canonical.MAX_DEPTH - canonical.PAYLOAD_LEVEL - 4
"""How deep `jsonable` nests below a payload member (a margin under §2's limit)."""
MAX_REPR = 2000

_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_str(s: str) -> str:
    """`s` without lone surrogates (written as ``\\udXXX`` text)."""
    if _SURROGATE.search(s) is None:
        return str.__str__(s)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


def _repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ is not our event's problem
        text = f"<{type(value).__qualname__}: repr raised {type(exc).__name__}>"
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + f"…[{len(text) - MAX_REPR} more chars]"
    return safe_str(text)


def text(value: object) -> str:
    """``str(value)``, never raising, without lone surrogates, at most `MAX_REPR` chars."""
    try:
        out = str(value)
    except Exception as exc:
        out = f"<{type(value).__qualname__}: str raised {type(exc).__name__}>"
    if len(out) > MAX_REPR:
        out = out[:MAX_REPR] + f"…[{len(out) - MAX_REPR} more chars]"
    return safe_str(out)


def _int(n: int) -> int | float | str:
    try:
        return canonical.check_integer(n, "")
    except InvalidEventError:
        return str(n)  # beyond what a JSON number can carry exactly


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON value (dict, list, str, int, float, bool, None) for `value`."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return safe_str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if depth >= MAX_DEPTH:
        return _repr(value)
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v, depth + 1) for v in value]
        return sorted(items, key=repr)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, decimal.Decimal | PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, BaseException):
        return {"type": type(value).__qualname__, "message": text(value)}
    dump = getattr(value, "model_dump", None)  # pydantic v2 models (LangChain's objects)
    if callable(dump):
        try:
            dumped = dump(warnings=False)
        except Exception:
            return _repr(value)
        return jsonable(dumped, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name, None), depth + 1)
            for f in dataclasses.fields(value)
        }
    return _repr(value)


def _key(k: object) -> str:
    if isinstance(k, str):
        return safe_str(k)
    if isinstance(k, enum.Enum):
        return safe_str(str(k.value))
    if k is None or isinstance(k, bool | int | float | uuid.UUID):
        return str(k)
    return _repr(k)


def shrink(value: Any, max_string: int = 4096, max_items: int = 100) -> Any:
    """A JSON value with strings cut to `max_string` chars and lists to
    `max_items` items (each cut says how much it left out)."""
    if isinstance(value, str):
        if len(value) <= max_string:
            return value
        return value[:max_string] + f"…[{len(value) - max_string} more chars]"
    if isinstance(value, dict):
        return {k: shrink(v, max_string, max_items) for k, v in value.items()}
    if isinstance(value, list):
        out = [shrink(v, max_string, max_items) for v in value[:max_items]]
        if len(value) > max_items:
            out.append(f"…[{len(value) - max_items} more items]")
        return out
    return value
