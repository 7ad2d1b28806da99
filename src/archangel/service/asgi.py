"""ASGI applications served through uvicorn, every connection a process.

What :meth:`archangel.App.serve_asgi` (and ``App.serve`` given a
``uvicorn.Config``) builds on: uvicorn's own HTTP protocols (``h11``,
``httptools``) on the transport, each beside a :class:`UvicornConnection`
whose work is its ASGI tasks, and a :class:`UvicornServing` doing what
``uvicorn.Server`` does around them (the lifespan, the Date header). uvicorn
is not imported at import time: a ``uvicorn.Config`` handed to the App has
imported it already.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from ..bus.timers import Timer, every
from ..errors import FrameworkError, InvalidArgument
from ..kernel.adopt import ConnectionProcess
from .serving import Serving

__all__ = ["UvicornConnection", "UvicornServing"]

#: Stands in for uvicorn's loggers on a killed connection: uvicorn logs every
#: exception that ends an ASGI task, its cancellation included, as "Exception in
#: ASGI application"; a kill is not an error of the application.
_QUIET = logging.Logger("archangel.service.asgi.killed")
_QUIET.disabled = True


class _Forwarding(asyncio.Protocol):
    """The transport's protocol for a framework protocol whose process is a companion.

    The data callbacks are the framework protocol's own bound methods, stored
    on the instance (no extra call per chunk); ``connection_made`` and
    ``connection_lost`` also tell the process.
    """

    def __init__(self, protocol: Any, process: ConnectionProcess) -> None:
        self._protocol = protocol
        self._process = process
        for name in ("data_received", "eof_received", "pause_writing", "resume_writing"):
            method = getattr(protocol, name, None)
            if method is not None:
                setattr(self, name, method)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._protocol.connection_made(transport)
        self._process.attach(transport)  # a process killed already aborts it

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._process.detach(exc)


class _Tasks:
    """uvicorn's task set of the whole server, seen by one connection's process too.

    A uvicorn protocol adds each ASGI task to ``self.tasks`` (the server's set,
    which ``limit_concurrency`` counts) and discards it when done; this keeps
    that set whole and also tells the connection's process, which ends only
    once its tasks have ended and cancels them when killed.
    """

    __slots__ = ("_process", "_shared")

    def __init__(self, shared: set[asyncio.Task[None]], process: ConnectionProcess) -> None:
        self._shared = shared
        self._process = process

    def add(self, task: asyncio.Task[None]) -> None:
        self._shared.add(task)
        self._process.add_task(task)

    def discard(self, task: asyncio.Task[None]) -> None:
        self._shared.discard(task)

    def __len__(self) -> int:
        return len(self._shared)


class UvicornConnection(ConnectionProcess):
    """One connection of a uvicorn server (HTTP, or a WebSocket it was upgraded to).

    * :meth:`stop` calls the protocol's ``shutdown()``, as uvicorn's server does
      at its end: an idle connection closes now, a request in flight finishes
      and then the connection closes; a WebSocket is closed with code 1012
      (service restart), uvicorn's choice.
    * :meth:`kill` cancels the connection's ASGI tasks (the application sees
      ``asyncio.CancelledError``; uvicorn's "Exception in ASGI application" log
      of it is silenced) and aborts the transport.

    An HTTP connection upgraded to a WebSocket stays the same process; its
    name becomes the WebSocket protocol's.
    """

    _stopping = False

    def upgraded(self, protocol: Any) -> None:
        """The connection now speaks through ``protocol`` (a WebSocket protocol)."""
        self.protocol = protocol
        self.name = type(protocol).__name__

    def on_stop(self) -> None:
        """uvicorn's graceful path: the protocol's ``shutdown()``."""
        if self.transport is None:
            super().on_stop()
        elif not self._stopping and not self._lost:
            self._stopping = True
            self.protocol.shutdown()

    def on_kill(self, reason: Any) -> None:
        """Cancel the ASGI tasks (quietly) and abort the transport."""
        for holder in (self.protocol, getattr(self.protocol, "cycle", None)):
            if holder is not None and getattr(holder, "logger", None) is not None:
                holder.logger = _QUIET
        super().on_kill(reason)


class UvicornServing(Serving):
    """An ASGI application served as ``uvicorn.Server`` serves it, each connection a process.

    * ``start``: the config is loaded, the lifespan protocol's startup runs
      (``FrameworkError`` if the application fails it), and the ``date`` and
      ``server`` headers are kept up to date once a second, as uvicorn's main
      loop does.
    * ``stopped`` (after the drain): the lifespan shutdown.

    What uvicorn's own ``Server`` does that the App does instead: signals
    (the App's policy), the graceful timeout (the App's ``shutdown_timeout``),
    the listening sockets. Not done, and refused when set
    (:class:`~archangel.InvalidArgument`), so a setting is never silently
    ignored: ``workers`` above 1 and ``reload`` (uvicorn's supervisor
    process, which the App is not: it serves in its own process),
    ``limit_max_requests`` and ``callback_notify`` (meant for uvicorn's
    worker processes).

    Raises:
        InvalidArgument: The config sets one of those.
    """

    _lifespan: Any = None
    _timer: Timer | None = None
    _started = False

    def __init__(self, target: Any, manager: Any) -> None:
        refused = [
            f"{name}={value!r}"
            for name, value, unset in (
                ("workers", getattr(target, "workers", None), (None, 1)),
                ("reload", getattr(target, "reload", False), (False,)),
                ("limit_max_requests", getattr(target, "limit_max_requests", None), (None,)),
                ("callback_notify", getattr(target, "callback_notify", None), (None,)),
            )
            if value not in unset
        ]
        if refused:
            raise InvalidArgument(
                f"cannot serve {getattr(target, 'app', target)!r} with uvicorn's "
                f"{', '.join(refused)}: those belong to uvicorn's own process management; "
                "the App serves in its own process, on one event loop. Leave them unset; to "
                "use more cores, run several instances of the service, sharing the port "
                "with app.serve(uvicorn.Config(...), host, port, reuse_port=True)"
            )
        super().__init__(target, manager)

    async def start(self) -> Callable[[], Any]:
        from uvicorn.server import ServerState

        config = self.target
        if not config.loaded:
            config.load()
        self._state = ServerState()
        self._lifespan = config.lifespan_class(config)
        self._started = True
        await self._lifespan.startup()
        if self._lifespan.should_exit:
            self._started = False  # uvicorn does not shut down a lifespan that failed
            raise FrameworkError(
                f"the ASGI application {config.app!r} failed its lifespan startup "
                "(uvicorn logged why)"
            )
        self._headers()
        self._timer = every(asyncio.get_running_loop(), 1.0, self._headers)
        return self._protocol

    def _headers(self) -> bool:
        """Set the responses' ``date`` (and ``server``) headers, as uvicorn's main loop does."""
        config = self.target
        date = [(b"date", formatdate(usegmt=True).encode())] if config.date_header else []
        self._state.default_headers = date + config.encoded_headers
        return True  # the timer goes on

    def _protocol(self) -> asyncio.Protocol:
        config = self.target
        protocol = config.http_protocol_class(
            config=config, server_state=self._state, app_state=self._lifespan.state
        )
        process = self.manager.register(UvicornConnection(protocol, name=type(protocol).__name__))
        self._adapt(protocol, process)
        return _Forwarding(protocol, process)

    def _adapt(self, protocol: Any, process: UvicornConnection) -> None:
        if hasattr(protocol, "tasks"):
            protocol.tasks = _Tasks(self._state.tasks, process)
        upgrade = getattr(protocol, "ws_protocol_class", None)
        if upgrade is not None:
            protocol.ws_protocol_class = functools.partial(self._upgrade, process, upgrade)

    def _upgrade(
        self, process: UvicornConnection, ws_protocol_class: Any, **kwargs: Any
    ) -> asyncio.Protocol:
        # uvicorn hands the transport to a new WebSocket protocol
        # (``transport.set_protocol``): the same connection, the same process.
        protocol = ws_protocol_class(**kwargs)
        self._adapt(protocol, process)
        process.upgraded(protocol)
        return _Forwarding(protocol, process)

    async def stopped(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._started:
            self._started = False
            await self._lifespan.shutdown()
