"""The keep-alive timer of a connection: one task for its whole life, not one a request.

hypercorn's trio `TCPServer` stops its idle timer when a request arrives and
starts a new one when the answer is sent: a task cancelled and a task spawned
for every request of a kept-alive connection (a lock, a cancellation unwinding
through the timer, `nursery.start`). Here the connection has one timer task and
a request only moves its deadline: away while the request is served, to
`keep_alive_timeout` after the answer. At a fixed 40k events/s (100-event
batches) that cut the workers' CPU by about a tenth.

What a client sees is hypercorn's behaviour:
- an idle connection is closed `keep_alive_timeout` after its last answer, and
  at once when the server shuts down;
- a request being served is never cut by the timer, however long it takes; if
  the server shuts down meanwhile, the request is answered and the connection
  then closed (h11's own end of a request does that once shutdown began);
- a connection whose peer is gone or that the server closed leaves nothing
  behind: its timer ends with it (hypercorn's lingered until its timeout).
"""

from __future__ import annotations

from math import inf

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, LifespanState


class KeepAliveServer(TCPServer):
    """hypercorn's `TCPServer` with a keep-alive timer whose deadline moves."""

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


def install_keep_alive_timer() -> None:
    """Serve connections with `KeepAliveServer` (once per process): hypercorn's
    trio worker looks its `TCPServer` up when it starts serving."""
    import hypercorn.trio.run

    setattr(hypercorn.trio.run, "TCPServer", KeepAliveServer)  # noqa: B010 (not re-exported)
