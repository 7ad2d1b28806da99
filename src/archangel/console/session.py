"""One console session: the telnet protocol, the token check and the command loop.

:class:`ConsoleProtocol` is a :class:`telnetlib3.TelnetServer` in binary mode
with no idle timeout. It starts its :class:`Session` at once instead of
after option negotiation, so a plain ``nc`` gets the banner and prompt
immediately, while a real telnet client negotiates ``WILL ECHO``/``WILL SGA``
in the background and then gets server-side line editing and history
(:mod:`~archangel.console.lineedit`). The session decodes UTF-8 itself, so
whatever bytes arrive, it never fails on them.

Limits: lines longer than ``max_line`` are refused whole, replies longer
than ``max_output`` bytes are cut (a JSON reply is replaced by a JSON error,
so it always parses), and a token (when set) must be the first line, sent
within ``token_timeout`` seconds.

Fairness and memory: input is fed to the line editor a bounded piece at a
time (:meth:`~archangel.console.lineedit.LineEditor.step`); after each piece
the session writes its echo, waits while the transport's write buffer is
above its high-water mark (a client that does not read is not read either,
so what it makes the console buffer stays bounded) and yields to the loop, so
a flood of keys in one session never starves the others; after a stretch of
such work the sessions rest together (:class:`Pacer`), so it never starves
the app's loop of the GIL either.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from telnetlib3.server import TelnetServer
from telnetlib3.stream_reader import TelnetReader
from telnetlib3.stream_writer import TelnetWriter
from telnetlib3.telopt import IP

from .commands import CommandTable, short_gil_slices
from .lineedit import Event, Key, LineEditor
from .render import to_json

__all__ = ["ConsoleProtocol", "Limits", "Pacer", "Session"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16  # well above what the reader buffers before pausing, see below


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one session may cost.

    Attributes:
        max_sessions: Sessions open at once; one more is told so and closed.
        max_line: Longest accepted line, in characters; a longer one is refused whole.
        max_output: Longest reply, in bytes; longer ones are cut (JSON ones
            are replaced by a JSON error, so they still parse).
        token_timeout: Seconds a session has to send its token.
        history: Lines of line-editing history kept per session.
    """

    max_sessions: int = 16
    max_line: int = 4096
    max_output: int = 1 << 20
    token_timeout: float = 30.0
    history: int = 100


class Pacer:
    """Rests the console's thread now and then while its sessions have work queued.

    The GIL hands over badly between a thread that works in short bursts
    between brief releases (a loop going round, each turn a short ``epoll``)
    and a thread that waits for it: the waiter is woken at each release, the
    releasing thread takes the GIL straight back, and the waiter's switch
    interval starts again, so it may wait for hundreds of milliseconds. A
    session chewing through a flood of keys does exactly that. So the
    sessions of a console share one pacer: once they have worked ``work``
    seconds in a row, each of them sleeps until ``rest`` seconds have passed,
    and the console's loop waits in ``epoll`` with the GIL released, long
    enough for the app's loop to take it. A session with nothing queued never
    calls it.
    """

    def __init__(self, work: float = 0.001, rest: float = 0.001) -> None:
        self.work = work
        self.rest = rest
        self._since = 0.0  # when the current stretch of work began
        self._last = 0.0  # the last call
        self._resume = 0.0  # the end of the rest under way

    async def pace(self) -> None:
        """Yield to the loop, resting first if the console has worked long enough."""
        now = time.perf_counter()
        if now - self._last > self.rest:  # the console was idle since: a new stretch
            self._since = now
        self._last = now
        if now < self._resume:
            await asyncio.sleep(self._resume - now)
        elif now - self._since >= self.work:
            self._resume = now + self.rest
            await asyncio.sleep(self.rest)
        else:
            await asyncio.sleep(0)
            return
        self._since = self._last = time.perf_counter()


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every session of one console shares."""

    table: CommandTable
    limits: Limits
    token: str | None
    banner: str
    prompt: str
    pacer: Pacer = dataclasses.field(default_factory=Pacer)


class Session:
    """The command loop of one connection (runs on the console's loop).

    Implements :class:`~archangel.console.commands.Terminal` for the
    commands it runs.
    """

    def __init__(self, reader: TelnetReader, writer: TelnetWriter, settings: Settings) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        limits = settings.limits
        self.editor = LineEditor(limits.max_line, limits.history, settings.table.complete)
        self.editor.prompt = settings.prompt
        self.more: list[str] | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._typed = ""  # decoded input not fed to the editor yet, from ``_fed`` on
        self._fed = 0
        self._quit = False
        self._eof = False

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        peer = self.writer.get_extra_info("peername")
        return str(peer) if peer else "unix socket"

    # -- Terminal --------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Columns of the client's screen (from NAWS; 80 when unknown)."""
        cols = self.writer.get_extra_info("cols")
        return cols if isinstance(cols, int) and cols > 0 else 80

    async def show(self, text: str) -> None:
        """Write ``text`` now."""
        await self._send(text)

    async def key(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for input; True if some came or the client left."""
        if self._events or self._fed < len(self._typed) or self._eof:
            self._events.clear()
            self._typed, self._fed = "", 0
            return True
        try:
            data = await asyncio.wait_for(self.reader.read(_READ_SIZE), timeout)
        except TimeoutError:
            return False
        if not data:
            self._eof = True
        self._decoder.decode(data)  # keep the decoder in step; the key itself is dropped
        return True

    def quit(self) -> None:
        """End the session after the current reply."""
        self._quit = True

    # -- I/O -----------------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")
        self.writer.write(data)
        await self.writer.drain()

    async def _reply(self, text: str) -> None:
        if not text:
            return
        if not text.endswith("\n"):
            text += "\n"
        limit = self.settings.limits.max_output
        data = text.encode("utf-8", "replace")
        if len(data) > limit:
            advice = "narrow it with filters or --limit"
            if text.startswith("{"):  # JSON: cutting it would not parse
                error = f"reply of {len(data)} bytes is over the {limit} byte limit: {advice}"
                text = to_json({"error": error}) + "\n"
            else:
                text = data[:limit].decode("utf-8", "ignore")
                text += f"\n[reply cut at {limit} bytes: {advice}]\n"
        await self._send(text)

    async def _feed_typed(self) -> None:
        """Feed what was typed ahead to the editor until an event completes or all is fed."""
        while not self._events and self._fed < len(self._typed):
            self.editor.echo = self.writer.will_echo
            echo, events, self._fed = self.editor.step(self._typed, self._fed)
            self._events.extend(events)
            if echo:
                self.writer.write(echo.encode("utf-8", "replace"))
                await self.writer.drain()  # not read while the client does not read
            await self.settings.pacer.pace()  # one piece at a time: others get their turn

    async def _next_event(self) -> Event | None:
        """The next line or key typed, or None once the client has gone."""
        while True:
            await self._feed_typed()
            if self._events:
                return self._events.popleft()
            if self._eof:
                return None
            data = await self.reader.read(_READ_SIZE)
            if not data:
                self._eof = True
            self._typed = self._decoder.decode(data, final=not data)
            self._fed = 0

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Check the token, then read and run commands until the client leaves.

        While the session is open the interpreter's switch interval is kept
        short (:func:`~archangel.console.commands.short_gil_slices`), so the
        app's loop never waits long for the GIL while this session works.
        """
        with short_gil_slices():
            await self._run()

    async def _run(self) -> None:
        try:
            if self.settings.token is not None and not await self._authenticate():
                return
            await self._send(self.settings.banner + "\n")
            while not self._quit:
                await self._prompt()
                event = await self._next_event()
                if event is None or event is Key.EOF:
                    break
                await self._handle(event)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("console session %s ended: %r", self.peer, exc)
        finally:
            self.writer.close()

    async def _prompt(self) -> None:
        await self._feed_typed()
        if self._events:
            return  # typed ahead: the next line is already here
        self.editor.echo = self.writer.will_echo
        await self._send(self.editor.redraw() if self.editor.echo else self.settings.prompt)

    async def _handle(self, event: Event) -> None:
        if event is Key.INTERRUPT:
            self.more = None
            return
        if event is Key.TOO_LONG:
            limit = self.settings.limits.max_line
            await self._reply(f"error: line too long (more than {limit} characters): ignored")
            return
        assert isinstance(event, str)
        table = self.settings.table
        if not event.strip():
            argv, self.more = self.more, None
            # The next page of a listing; never a command that changes anything.
            if argv and argv[0] in table and not table[argv[0]].changes:
                await self._reply(await table.run(argv, self))
            return
        self.more = None
        await self._reply(await table.run_line(event, self))

    async def _authenticate(self) -> bool:
        token = self.settings.token
        assert token is not None
        self.editor.secret = True
        await self._send("token: ")
        try:
            async with asyncio.timeout(self.settings.limits.token_timeout):
                event = await self._next_event()
        except TimeoutError:
            await self._send("\nno token received: disconnected\n")
            logger.warning("console: no token from %s in time; closed", self.peer)
            return False
        self.editor.secret = False
        if not isinstance(event, str) or not hmac.compare_digest(
            event.strip().encode("utf-8", "replace"), token.encode()
        ):
            await self._send("\nbad token: disconnected\n")
            logger.warning("console: bad token from %s; closed", self.peer)
            return False
        return True


class _ClientTelnetLog(logging.LoggerAdapter[logging.Logger]):
    """telnetlib3's per-session log, at DEBUG: a client's broken telnet is not our warning.

    A hostile client could otherwise flood the app's log with one warning
    per malformed negotiation.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


_telnet_log = logging.getLogger(__name__ + ".telnet")


class ConsoleProtocol(TelnetServer):
    """The telnet protocol of a console session.

    Args:
        settings: What sessions share.
        opened: Called with the session's coroutine when the connection is
            made (the server runs it as a task).
        closed: Called once when the connection is lost.
        made: Called with the transport first thing in ``connection_made``,
            so the server can abort what is left when it closes.
    """

    def __init__(
        self,
        settings: Settings,
        opened: Callable[[Session], None],
        closed: Callable[[ConsoleProtocol], None],
        made: Callable[[asyncio.BaseTransport], None],
    ) -> None:
        super().__init__(
            encoding=False,  # bytes in and out: the session decodes UTF-8 itself
            timeout=0,  # no idle timeout
            connect_maxwait=1.0,  # only bounds background negotiation
            limit=1 << 14,
        )
        self._settings = settings
        self._opened = opened
        self._closed = closed
        self._made = made
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start negotiation in the background and the session at once."""
        self._made(transport)
        super().connection_made(transport)
        assert self.reader is not None and self.writer is not None
        reader = self.reader

        def interrupt(cmd: bytes) -> None:  # telnet IP (Ctrl-C in some clients) is Ctrl-C
            reader.feed_data(b"\x03")

        self.writer.set_iac_callback(IP, interrupt)
        self.writer.log = cast(logging.Logger, _ClientTelnetLog(_telnet_log, {}))
        self.session = Session(self.reader, self.writer, self._settings)
        self._opened(self.session)

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the server, once."""
        first = not self._closing
        super().connection_lost(exc)
        if first:
            self._closed(self)
