"""Keeps the SDK's own HTTP calls out of OpenTelemetry traces.

OTel instrumentations (httpx's among them) make no span while the current
context carries the suppress-instrumentation key: exporters set it around their
own requests, and so does the SDK around all of its requests (the sender thread
runs with it set for its whole life). Without opentelemetry installed this is a
no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def no_instrumentation() -> Iterator[None]:
    try:
        from opentelemetry import context
    except ImportError:  # opentelemetry-api is an optional extra
        yield
        return
    ctx = context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True)
    http_key = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)
    if isinstance(http_key, str):  # opentelemetry-api >= 1.28
        ctx = context.set_value(http_key, True, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
