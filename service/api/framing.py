"""HTTP/1.1 framing: what must be refused before a request reaches a route, and
the HTTP layer's own error responses, both as problem+json.

hypercorn answers a request h11 cannot parse (a bad request line, headers too
large, an unknown transfer coding) itself, with an empty body; and it serves a
request that carries both `Transfer-Encoding` and `Content-Length`, keeping the
connection open, which RFC 9112 §6.1 forbids (a proxy in front may have framed
that body differently: request smuggling).
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING

import h11

from .problems import problem_body

if TYPE_CHECKING:
    from hypercorn.protocol.h11 import H11Protocol

# h11's `error_status_hint` values, and the code each is answered with.
_LAYER_ERRORS = {
    400: ("malformed_request", "the request's line or headers are not valid HTTP/1.1"),
    413: ("too_large", "the request is too large"),
    414: ("uri_too_long", "the request target is too long"),
    431: ("headers_too_large", "the request's headers are too large"),
    501: ("not_implemented", "the request uses a transfer coding this server does not implement"),
    505: ("http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served"),
}


async def _send_problem(protocol: H11Protocol, status: int, code: str, detail: str) -> None:
    """A problem+json response straight from the HTTP layer; the connection closes."""
    body, content_type = problem_body(status, code, detail)
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await protocol._send_h11_event(
        h11.Response(
            status_code=status,
            headers=list(chain(headers, protocol.config.response_headers("h11"))),
        )
    )
    await protocol._send_h11_event(h11.Data(data=body))
    await protocol._send_h11_event(h11.EndOfMessage())


def _ambiguous(request: h11.Request) -> bool:
    """Both Transfer-Encoding and Content-Length (RFC 9112 §6.1). (h11 itself refuses
    differing Content-Length values.)"""
    names = {name for name, _ in request.headers}
    return b"transfer-encoding" in names and b"content-length" in names


def install_problem_bodies() -> None:
    """Make hypercorn's own error responses problem+json, and refuse ambiguous
    framing before the request reaches the app (once per process)."""
    from hypercorn.events import Closed
    from hypercorn.protocol.h11 import H11Protocol

    if getattr(H11Protocol, "problem_json", False):
        return
    create_stream = H11Protocol._create_stream

    async def send_error_response(self: H11Protocol, status_code: int) -> None:
        code, detail = _LAYER_ERRORS.get(status_code, _LAYER_ERRORS[400])
        await _send_problem(self, status_code, code, detail)

    async def create_stream_unless_ambiguous(self: H11Protocol, request: h11.Request) -> None:
        if not _ambiguous(request):
            await create_stream(self, request)
            return
        # Answered and closed here: nothing after this request is ever served.
        detail = "the request has both Transfer-Encoding and Content-Length"
        await _send_problem(self, 400, "bad_framing", detail)
        await self.send(Closed())

    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]
    H11Protocol._create_stream = create_stream_unless_ambiguous  # type: ignore[method-assign]
    H11Protocol.problem_json = True  # type: ignore[attr-defined]
