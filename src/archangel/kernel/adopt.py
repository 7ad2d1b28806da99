"""Adoption: manage connections whose protocol does not inherit :class:`~archangel.Process`.

Two shapes, for two kinds of foreign protocol:

* A **proxy** is the transport's protocol and a process at once.
  ``ProcessManager.register`` wraps the product of a foreign factory (any
  ``asyncio.Protocol``, aiohttp's request handler) in one. The proxy hands the
  transport's data callbacks straight to the adopted protocol: they are bound
  methods stored on the proxy instance, so a ``data_received`` costs no extra
  call. Only ``connection_made`` and ``connection_lost`` pass through the
  proxy, for the bookkeeping. The process ends when the connection is lost.
* A **companion** (:class:`ConnectionProcess`) stands beside a connection
  whose protocol a framework owns: one the framework swaps for another on the
  same transport (uvicorn upgrading HTTP to a WebSocket), or whose work runs
  in tasks that may outlive the transport (an asyncio streams handler, an ASGI
  application). The framework's side tells it when the connection is made and
  lost and which tasks do its work; the process ends once the connection is
  lost *and* those tasks have ended.

No framework is imported here: aiohttp's handler is recognised only when
aiohttp has been imported already (it must have been, to make one).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from ..errors import NotAProcess
from .process import ExitReason, Process, ProcessState

__all__ = [
    "AdoptedBufferedProtocol",
    "AdoptedProtocol",
    "AiohttpConnection",
    "ConnectionProcess",
    "adopt",
]

logger = logging.getLogger(__name__)

_NEW, _EXITED = ProcessState.NEW, ProcessState.EXITED


class _Adopted(Process):
    """What both proxies share: the adopted protocol, its name, the forwarding.

    Attributes:
        protocol: The adopted protocol; the transport talks to it directly.
    """

    #: The transport's callbacks handed straight to the adopted protocol: the
    #: proxy keeps its bound methods as instance attributes, which shadow the
    #: no-op methods of the same names on asyncio's protocol classes. One the
    #: protocol lacks (a duck-typed protocol need not have ``eof_received``,
    #: say) is left to those no-ops, as ``asyncio.Protocol`` would.
    _forwarded: tuple[str, ...] = ()
    protocol: Any

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.name = type(protocol).__name__
        for name in self._forwarded:
            method = getattr(protocol, name, None)
            if method is not None:
                setattr(self, name, method)

    def connection_made(self, transport: Any) -> None:
        self.protocol.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        lost = getattr(self.protocol, "connection_lost", None)
        if lost is not None:
            lost(exc)


class AdoptedProtocol(_Adopted, asyncio.Protocol):
    """A process standing in front of a foreign ``asyncio.Protocol``."""

    _forwarded = ("data_received", "eof_received", "pause_writing", "resume_writing")


class AdoptedBufferedProtocol(_Adopted, asyncio.BufferedProtocol):
    """A process standing in front of a foreign ``asyncio.BufferedProtocol``."""

    _forwarded = (
        "buffer_updated",
        "eof_received",
        "get_buffer",
        "pause_writing",
        "resume_writing",
    )


class AiohttpConnection(AdoptedProtocol):
    """An adopted aiohttp ``RequestHandler``: one HTTP connection of an aiohttp server.

    * :meth:`stop` takes aiohttp's own graceful path, the one ``run_app``
      takes at its end: ``close()`` (no further request is read; an idle
      keep-alive connection closes at once), then ``shutdown()``, which lets
      the request in flight finish and its response be written before the
      connection closes. The manager's shutdown timeout bounds it: what is
      still running then is killed.
    * :meth:`kill` cancels the handler's task (the request handler sees
      ``asyncio.CancelledError`` where it awaits) and aborts the transport, so
      no handler runs on unseen after its connection is gone.
    """

    _stopping: asyncio.Future[None] | None = None

    def on_stop(self) -> None:
        """Finish the request in flight, then close (aiohttp's ``shutdown``)."""
        if self.transport is None:
            super().on_stop()
        elif self._stopping is None:
            handler = self.protocol
            handler.close()
            # No timeout of aiohttp's own: the manager's shutdown timeout bounds
            # the stop, and kills the connection when it runs out.
            self._stopping = asyncio.ensure_future(handler.shutdown(None))
            self._stopping.add_done_callback(self._stopped)

    def _stopped(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            logger.error("pid %s: aiohttp's shutdown() raised", self.pid, exc_info=exc)

    def on_kill(self, reason: ExitReason) -> None:
        """Cancel the handler's task and abort the transport."""
        if self._stopping is not None:
            self._stopping.cancel()
        # aiohttp keeps the task running the connection (``start()``, which
        # awaits the request handler's task) here, and cancels it in its own
        # ``shutdown()``; a kill must not wait for the handler to notice.
        task = getattr(self.protocol, "_task_handler", None)
        if task is not None:
            task.cancel()
        super().on_kill(reason)


def adopt(protocol: Any) -> Process:
    """Wrap a foreign protocol object in a process proxy.

    ``protocol`` is an ``asyncio.BufferedProtocol``, or any object with
    ``connection_made`` and ``data_received``; the other callbacks
    (``connection_lost``, ``eof_received``, ``pause_writing``,
    ``resume_writing``) are optional, and do what ``asyncio.Protocol``'s do
    when missing. An aiohttp request handler becomes an
    :class:`AiohttpConnection`, whose graceful stop and kill are aiohttp's.

    Raises:
        NotAProcess: ``protocol`` is not a protocol (no ``connection_made``).
    """
    if isinstance(protocol, Process):
        return protocol
    web_protocol = sys.modules.get("aiohttp.web_protocol")
    if web_protocol is not None and isinstance(protocol, web_protocol.RequestHandler):
        return AiohttpConnection(protocol)
    if isinstance(protocol, asyncio.BufferedProtocol):
        return AdoptedBufferedProtocol(protocol)
    if not (hasattr(protocol, "connection_made") and hasattr(protocol, "data_received")):
        raise NotAProcess(
            f"cannot adopt {protocol!r}: it is neither a Process nor an asyncio protocol"
        )
    return AdoptedProtocol(protocol)


class ConnectionProcess(Process):
    """A process standing beside one connection whose protocol a framework owns.

    The framework's side calls :meth:`attach` when the connection is made,
    :meth:`detach` when it is lost, and :meth:`add_task` for each task doing
    the connection's work (a streams handler, an ASGI request). The process
    runs from :meth:`attach` and ends once the connection is lost and every
    task added has ended; a task that raised makes it end with ``error``.

    By default :meth:`stop` closes the transport (buffered writes are flushed
    first) and :meth:`kill` cancels the tasks and aborts the transport; the
    framework subclasses override :meth:`on_stop` with their graceful path.

    Args:
        protocol: The framework's protocol or connection object, for the
            subclasses' graceful path; it may change (an upgraded connection).
        name: The process's name in listings.

    Attributes:
        protocol: The framework's object for this connection.
    """

    protocol: Any = None
    _tasks: set[asyncio.Task[Any]] | None = None
    _lost: bool = False
    _lost_error: BaseException | None = None
    _failure: BaseException | None = None
    _cancelling: bool = False

    def __init__(self, protocol: Any = None, *, name: str | None = None) -> None:
        self.protocol = protocol
        if name is not None:
            self.name = name

    def attach(self, transport: Any) -> bool:
        """The connection is made: the process runs. False if it was killed already.

        A process killed before its connection was made aborts the transport
        here, as a process that is a protocol does.
        """
        if self.state is _NEW:
            self.connection_made(transport)
        elif self.state is _EXITED:
            transport.abort()
        return self.state is not _EXITED

    def detach(self, exc: BaseException | None) -> None:
        """The connection is lost (``exc`` as ``connection_lost`` has it)."""
        if self._lost:
            return
        self._lost, self._lost_error = True, exc
        self._end_if_done()

    def add_task(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` as the connection's work; a killed process cancels it at once."""
        if self.state is _EXITED or self._cancelling:
            task.cancel()
            if self.state is _EXITED:
                return
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if self._peer_gone(exc) or self._expected(exc):
                logger.debug("pid %s (%s): task ended by %r", self.pid, self.name, exc)
            else:
                if self._failure is None:
                    self._failure = exc
                logger.error("pid %s (%s) failed", self.pid, self.name, exc_info=exc)
        self._end_if_done()

    def _peer_gone(self, exc: BaseException) -> bool:
        """Whether a task's exception only says the connection is gone: a normal end.

        A ``ConnectionError`` (reset, broken pipe: the peer went away) always
        is. So is the error a closed transport raises on use once the
        connection is lost or closing: uvloop's ``RuntimeError("unable to
        perform operation on <TCPTransport closed=True ...>; the handler is
        closed")`` from a write after the client reset (asyncio's transport
        drops that write instead, and the reset surfaces at ``drain()``).
        """
        if isinstance(exc, ConnectionError):
            return True
        if not isinstance(exc, RuntimeError) or "the handler is closed" not in str(exc):
            return False
        transport = self.transport
        return self._lost or (transport is not None and transport.is_closing())

    def _expected(self, exc: BaseException) -> bool:
        """Whether a task's exception is an ordinary end rather than a failure.

        Besides those saying the connection is gone (always an ordinary end),
        subclasses add their own (a streams handler's ``EOFError`` after a
        graceful stop).
        """
        return False

    def _end_if_done(self) -> None:
        if self._lost and not self._tasks and self.state is not _EXITED:
            self.connection_lost(self._failure or self._lost_error)

    def on_kill(self, reason: ExitReason) -> None:
        """Cancel the connection's tasks and abort its transport."""
        self._cancelling = True
        for task in list(self._tasks or ()):
            task.cancel()
        if self.transport is None:
            self._exit(None)
        elif not self._lost:
            self.transport.abort()
        else:
            self._end_if_done()
