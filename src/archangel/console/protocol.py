"""The telnet protocol of a console connection, on telnetlib3, with its edges made safe.

:class:`ConsoleProtocol` is a :class:`telnetlib3.TelnetServer` in binary
mode with no idle timeout of telnetlib3's own (the console keeps its own).
It starts its :class:`~archangel.console.session.Session` at once instead
of after option negotiation, so a plain ``nc`` gets the banner and prompt
immediately, while a real telnet client negotiates ``WILL ECHO``/``WILL SGA``
in the background.

**Telnet only to a client that can take it.** The console sends no telnet
command before it knows what the client speaks, so a plain-socket client
(``printf 'ps\\n' | nc -N``, a script) gets clean text that ``grep`` reads as
text. The client's first bytes decide: an IAC (a telnet client that
negotiates first) starts the negotiation at once; anything else makes it a
raw line client, which is never sent an IAC. A client that says nothing for
:data:`TELNET_PROBE` seconds after connecting (a person at ``telnet``, which
waits for the server on a port other than 23) is offered the options then,
as a telnet server offers them on connect.

Where telnetlib3 5.x, used as it comes, loses answers or memory, this class
does otherwise:

* **Half-close.** telnetlib3 treats the client's EOF as the end of the
  connection and closes it at once, so ``printf 'ps\\nquit\\n' | nc -N``
  would get only the banner. Here EOF only ends the input: the session
  answers what was sent first, then closes.
* **Input is paused** while the session has 32 KB unread (telnetlib3's
  reader can pause its transport, but only once given it), so a client
  that sends without reading costs a bounded buffer.
* **A session waiting in** ``drain()`` **is woken** when the connection is
  lost (telnetlib3's ``connection_lost`` skips the flow-control wake-up, so
  it would wait, and hold its reply, forever).
* **A lingering close.** Once the session ends, what it wrote is flushed
  and the console shuts its side down, reading and dropping what the client
  still sends until the client closes too: closing a socket with unread
  input would send a reset, which can destroy the answers in flight. A
  client that does not read them, or does not close, is cut off after
  :data:`LINGER` seconds; until the socket is closed it still counts
  against the console's session limit.
* **A client's malformed telnet** (a short NAWS, say) is logged at DEBUG,
  at most :data:`TELNET_LOG_LIMIT` lines per connection, where telnetlib3
  would log a traceback at WARNING, line by line, for each one.
* ``repr()`` works on a Unix socket, whose peer name is not a tuple
  (telnetlib3's fails, and every log line naming the connection with it).
"""

from __future__ import annotations

import asyncio
import logging
from asyncio.streams import FlowControlMixin
from collections.abc import Callable
from typing import Any, cast

from telnetlib3.server import TelnetServer
from telnetlib3.stream_writer import TelnetWriter
from telnetlib3.telopt import IAC, IP

from .session import Session, Settings

__all__ = ["LINGER", "TELNET_LOG_LIMIT", "TELNET_PROBE", "ConsoleProtocol"]

#: Seconds a closed session's unread output may wait for its client before it is dropped.
LINGER = 10.0
#: Seconds a silent new connection is given before the console offers it telnet options.
#: A piped ``nc`` or a script sends its first line within milliseconds; a person
#: at ``telnet`` types nothing that soon (and, before the offer, is in the
#: client's line mode: what is typed is still sent, as whole lines).
TELNET_PROBE = 0.25
#: Lines of telnet trouble logged per connection; the rest are counted in one line.
TELNET_LOG_LIMIT = 20
#: The reader pauses the socket above twice this many unread bytes.
_READ_LIMIT = 1 << 14

_telnet_log = logging.getLogger("archangel.console.session.telnet")
logger = logging.getLogger("archangel.console.session")


class _QuietConnections(logging.Filter):
    """Drops telnetlib3's own per-connection lines about console connections.

    telnetlib3 logs "Connection from ...", "Connection closed for ..." and
    "Connection lost for ..." at INFO for every connection, so a health check
    probing the console every few seconds would fill the app's log. The
    console logs its connections itself, at DEBUG (see
    :class:`ConsoleProtocol`). Lines about other telnetlib3 servers in the
    same process pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], ConsoleProtocol):
            return record.levelno > logging.INFO
        return True


#: The loggers of telnetlib3 that name a console connection in their lines.
_TELNETLIB3_LOGGERS = ("telnetlib3.server_base", "telnetlib3.server")


def describe_peer(peername: Any) -> str:
    """A transport's ``peername`` for logs: ``host:port``, or ``unix socket``."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return "unix socket"


class _ClientTelnetLog(logging.LoggerAdapter[logging.Logger]):
    """telnetlib3's per-connection log: at DEBUG, and at most ``limit`` lines.

    A client's broken telnet is not the app's warning, and a hostile client
    could otherwise flood the app's log with one line per malformed byte.
    """

    def __init__(self, peer: str, limit: int = TELNET_LOG_LIMIT) -> None:
        super().__init__(_telnet_log, {})
        self.peer = peer
        self.limit = limit
        self.count = 0

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.count += 1
        if self.count <= self.limit:
            super().log(min(level, logging.DEBUG), msg, *args, **kwargs)
        elif self.count == self.limit + 1:
            super().log(
                logging.DEBUG,
                "%s: more telnet trouble; not logged any more for this connection",
                self.peer,
            )


class _Writer(TelnetWriter):
    """telnetlib3's writer, with its IAC interpreter's failures logged at DEBUG.

    It does not simulate special line characters (SLC): telnetlib3 would
    only log them, and looking for them takes a Python step per input byte.
    The session handles control characters itself.
    """

    slc_simulated = False

    #: telnetlib3's option tables, each holding the writer's own ``_check_waiters``.
    _OPTION_TABLES = ("pending_option", "local_option", "remote_option")

    def release(self) -> None:
        """Drop what ties the writer to itself, once its connection is over.

        Each of telnetlib3's option tables keeps a bound method of the writer
        (called on every change), a reference cycle its ``close()`` leaves in
        place; so a writer, with the reader, the buffers and the session it
        reaches, would wait for the cyclic garbage collector, which in a busy
        service may run minutes later. Without them an ended session is freed
        as soon as its last reference goes.
        """
        for name in self._OPTION_TABLES:
            table: Any = getattr(self, name, None)
            if table is not None and hasattr(table, "_on_change"):
                table._on_change = None
        self._protocol = None

    def close(self) -> None:
        """End the session; its protocol closes the connection (a lingering close)."""
        if not self.connection_closed:
            self._transport = None  # type: ignore[assignment]  # not closed here: see above
        super().close()

    def feed_byte(self, byte: bytes) -> bool:
        try:
            return super().feed_byte(byte)
        except Exception as exc:
            # telnetlib3 logs anything but a ValueError as a traceback, line by
            # line, at WARNING. Its state machine has reset itself (finally
            # clauses): the byte is a command, consumed.
            self.log.debug("malformed telnet from the client: %r", exc)
            return False


class _Lingering(asyncio.Protocol):
    """Stands in for an ended session while its connection flushes and closes.

    What the client still sends is read and dropped; at its EOF the
    transport closes (once what the session wrote is flushed).
    """

    def __init__(self, closed: Callable[[], None]) -> None:
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()


class ConsoleProtocol(TelnetServer):
    """The telnet protocol of a console session.

    Args:
        settings: What sessions share.
        opened: Called with the protocol when the connection is made (the
            server runs :attr:`session` as a task and sets :attr:`task`).
        released: Called once, when the connection is closed for good and
            its slot free.
        made: Called with the transport first thing in ``connection_made``,
            so the server can abort what is left when it closes.
    """

    def __init__(
        self,
        settings: Settings,
        opened: Callable[[ConsoleProtocol], None],
        released: Callable[[ConsoleProtocol], None],
        made: Callable[[asyncio.BaseTransport], None],
    ) -> None:
        super().__init__(
            encoding=False,  # bytes in and out: the session decodes UTF-8 itself
            timeout=0,  # telnetlib3's idle timeout: off (the console has its own)
            connect_maxwait=1.0,  # only bounds background negotiation
            limit=_READ_LIMIT,
            writer_factory=_Writer,
        )
        self._settings = settings
        self._opened = opened
        self._released = released
        self._made = made
        #: The session, made when the connection is (None until then).
        self.session: Session | None = None
        #: The task running :attr:`session`, set by the server.
        self.task: asyncio.Task[None] | None = None
        self.peer = "-"
        self._socket: asyncio.WriteTransport | None = None  # until closed for good
        self._eof = False  # the client has half-closed
        self._lost = False
        self._free = False
        self._linger: asyncio.TimerHandle | None = None
        # What the client speaks: None until its first bytes (or TELNET_PROBE of silence).
        self._telnet: bool | None = None
        self._probe: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ConsoleProtocol {self.peer}>"

    @property
    def connection(self) -> asyncio.WriteTransport | None:
        """The connection's transport, until its socket is closed for good."""
        return self._socket

    @property
    def ended(self) -> bool:
        """The session is over (its connection may still be flushing)."""
        return self._lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start negotiation in the background and the session at once."""
        self._made(transport)
        assert isinstance(transport, asyncio.WriteTransport)
        self._socket = transport
        self.peer = describe_peer(transport.get_extra_info("peername"))
        super().connection_made(transport)
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        reader.set_transport(transport)  # pause reading while the session is behind

        def interrupt(cmd: bytes) -> None:  # telnet IP (Ctrl-C in some clients) is Ctrl-C
            reader.feed_data(b"\x03")

        self.writer.set_iac_callback(IP, interrupt)
        self.writer.log = cast(logging.Logger, _ClientTelnetLog(self.peer))
        self.session = Session(self.reader, self.writer, self._settings, self.peer)
        logger.debug("console: connection from %s", self.peer)
        self._opened(self)

    def begin_negotiation(self) -> None:
        """Wait for the client to show what it speaks before offering telnet options.

        telnetlib3 schedules this from ``connection_made`` and would send
        ``DO TTYPE`` at once. Here the offer waits for the client's first
        bytes, or for :data:`TELNET_PROBE` seconds of silence (see the module
        docstring). Nothing is offered on a connection already over (pushed
        out of a full session table): it would fail in its negotiation timer.
        """
        if self._lost or self._telnet is not None or self._probe is not None:
            return
        self._probe = asyncio.get_running_loop().call_later(TELNET_PROBE, self._silent)

    def _silent(self) -> None:
        self._probe = None
        if self._telnet is None:
            self._negotiate()  # a client that waits for the server: a telnet client

    def _negotiate(self) -> None:
        self._telnet = True
        if not self._lost:
            super().begin_negotiation()

    def data_received(self, data: bytes) -> None:
        """The client's bytes; the first ones tell whether it speaks telnet."""
        if self._telnet is None and data:
            if self._probe is not None:
                self._probe.cancel()
                self._probe = None
            if data[0] == IAC[0]:
                self._negotiate()  # offered before its commands are read: they answer it
            else:
                self._telnet = False  # a raw line client: never sent an IAC
        super().data_received(data)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol: bool | None
        """The client is done sending: the session answers what came, then closes."""
        self._eof = True
        if self.reader is not None:
            self.reader.feed_eof()
        return True  # keep the transport open for the answers

    def connection_lost(self, exc: Exception | None) -> None:
        """End the session; free the slot once what it wrote is flushed (or dropped)."""
        if self._lost:
            return
        self._lost = True
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if exc is None:
            logger.debug("console: connection from %s ended", self.peer)
        else:
            logger.debug("console: connection from %s lost: %s", self.peer, exc)
        transport = self._socket
        self._transport = None  # telnetlib3 would close it at once: see _close_lingering
        super().connection_lost(exc)  # EOF (or the error) to the reader
        FlowControlMixin.connection_lost(self, exc)  # wake a session waiting in drain()
        if transport is not None and not transport.is_closing():
            self._close_lingering(transport)  # the session ended: the socket is still open
        else:
            self._release()  # the transport is gone (or going: it was closed or aborted)

    def _close_lingering(self, transport: asyncio.WriteTransport) -> None:
        transport.set_protocol(_Lingering(self._release))
        if self._eof or not transport.can_write_eof():
            transport.close()  # the client sent everything: nothing unread to cause a reset
        else:
            transport.write_eof()  # after what is buffered; then read until the client's EOF
            if isinstance(transport, asyncio.ReadTransport) and not transport.is_reading():
                transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(LINGER, transport.abort)

    def end(self, notice: str, *, abort: bool = False) -> None:
        """End the session from outside (it was idle too long, or its slot is needed).

        ``notice`` is written first, if the connection can take it. With
        ``abort`` the connection is dropped and its slot freed at once;
        otherwise it closes as after ``quit``.
        """
        transport = self._socket
        if transport is None:
            return
        # Only into an empty buffer: it goes out at once, even if the socket is aborted.
        idle_line = not transport.is_closing() and transport.get_write_buffer_size() == 0
        if notice and not self._lost and idle_line:
            transport.write(notice.replace("\n", "\r\n").encode())
        if self.task is not None:
            self.task.cancel()
        if abort:
            transport.abort()
            self.connection_lost(None)
            self._release()
        elif self.writer is not None:
            self.writer.close()

    def _release(self) -> None:
        if self._free:
            return
        self._free = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._socket = None
        if isinstance(self.writer, _Writer):
            self.writer.release()  # no cycle left: freed with its last reference
        self._released(self)


_quiet = _QuietConnections()
for _name in _TELNETLIB3_LOGGERS:
    logging.getLogger(_name).addFilter(_quiet)
