"""How a kept-alive HTTP/1.1 connection is served: hypercorn's trio server, with
fewer task switches per request.

Each `await` that reaches trio's scheduler costs a worker a pass of its loop,
and at moderate load most of those passes serve a single request. hypercorn
spends several per request on the connection alone:

- **The keep-alive timer.** hypercorn's trio `TCPServer` stops its idle-timer
  task when a request arrives and starts a new one when the answer is sent: a
  lock, a cancellation unwinding through the timer and a `nursery.start` per
  request. `KeepAliveServer` keeps one timer task for the connection's life, and
  a request only moves its deadline: away while it is served, to
  `keep_alive_timeout` after its answer.
- **Three writes per answer.** h11 turns an answer into a head, its body and an
  end of message (empty when the body has a Content-Length), and hypercorn
  writes each one under the connection's send lock. Here the head is held until
  the next part of its answer and written with it, and an empty write is none.

At a fixed 40k events/s (100-event batches) the timer cut the workers' CPU per
batch by about 7 %, the writes and two waits on events already set in the ingest
route by about as much again (see docs/performance.md, "Each change against
the version before it").

What a client sees is hypercorn's behaviour:
- an idle connection is closed `keep_alive_timeout` after its last answer, and
  at once when the server shuts down;
- a request being served is never cut by the timer, however long it takes; if
  the server shuts down meanwhile, the request is answered and the connection
  then closed (h11's own end of a request does that once shutdown began);
- a connection whose peer is gone or that the server closed leaves nothing
  behind: its timer ends with it (hypercorn's lingered until its timeout);
- an answer's bytes are the same; its head goes out with its first body bytes
  (or its end), not before them.
"""

from __future__ import annotations

from math import inf
from typing import TYPE_CHECKING

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, H11SendableEvent, LifespanState

if TYPE_CHECKING:
    from hypercorn.protocol.h11 import H11Protocol

_HELD_HEAD = "_chain_held_head"


class KeepAliveServer(TCPServer):
    """hypercorn's `TCPServer` with a keep-alive timer whose deadline moves, and
    no empty writes."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SSLStream[trio.SocketStream],  # as hypercorn declares it
    ) -> None:
        super().__init__(app, config, context, state, stream)
        self._timer = trio.CancelScope()
        self._busy = False
        self._over = False

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self._busy = not event.idle
            if event.idle:
                self._timer.deadline = trio.current_time() + self.config.keep_alive_timeout
            else:
                self._timer.deadline = inf
            return
        if isinstance(event, RawData) and not event.data:
            return  # an end of message that is no bytes: nothing to write
        if isinstance(event, Closed):
            self._end_timer()
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self._end_timer()  # the peer is gone, or the read failed or timed out

    def _end_timer(self) -> None:
        self._over = True
        self._timer.cancel()

    async def _idle_timeout(self) -> None:
        """Started once, by `TCPServer.run`, before the first byte is read."""
        self._timer.deadline = trio.current_time() + self.config.keep_alive_timeout
        with self._timer:
            await self.context.terminated.wait()  # shutting down
        if self._over or self._busy:
            return  # closed already, or closed by h11 once its request is answered
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()


def _hold_heads() -> None:
    """An answer's head is written with the next part of that answer."""
    from hypercorn.protocol.h11 import H11Protocol

    if getattr(H11Protocol, "holds_heads", False):
        return
    send_h11_event = H11Protocol._send_h11_event

    async def send_held(self: H11Protocol, event: H11SendableEvent) -> None:
        head: bytes | None = vars(self).pop(_HELD_HEAD, None)
        if head is None and not isinstance(event, h11.Response):
            await send_h11_event(self, event)
            return
        try:
            data = self.connection.send(event) or b""
        except h11.LocalProtocolError:  # as hypercorn: nothing to send to a broken peer
            if self.connection.their_state != h11.ERROR:
                raise
            data = b""
        if head is None:
            vars(self)[_HELD_HEAD] = data  # a head: wait for its body, or its end
        else:
            await self.send(RawData(data=head + data))

    H11Protocol._send_h11_event = send_held  # type: ignore[method-assign]
    H11Protocol.holds_heads = True  # type: ignore[attr-defined]


def install_connection_handling() -> None:
    """Serve connections as above (once per process): hypercorn's trio worker
    looks its `TCPServer` up when it starts serving."""
    import hypercorn.trio.run

    setattr(hypercorn.trio.run, "TCPServer", KeepAliveServer)  # noqa: B010 (not re-exported)
    _hold_heads()
