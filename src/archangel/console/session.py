"""One console session: the token check and the command loop.

:class:`Session` runs on the console's loop, one task per connection, over
the reader and writer of its :class:`~archangel.console.protocol.ConsoleProtocol`.
It decodes UTF-8 itself, so whatever bytes arrive, it never fails on them.

Limits: lines longer than ``max_line`` are refused whole, replies longer
than ``max_output`` bytes are cut (a JSON reply is replaced by a JSON error,
so it always parses), a token (when set) must be the first line, sent
within ``token_timeout`` seconds, and token checks are throttled per peer
(:class:`~archangel.console.guard.Throttle`).

Fairness and memory: input is fed to the line editor a bounded piece at a
time (:meth:`~archangel.console.lineedit.LineEditor.step`); after each piece
the session writes its echo, waits while the transport's write buffer is
above its high-water mark (a client that does not read is not read either,
so what it makes the console buffer stays bounded) and yields to the loop, so
a flood of keys in one session never starves the others; after a stretch of
such work the sessions rest together
(:class:`~archangel.console.fairness.Pacer`), so it never starves the app's
loop of the GIL either. The rules are :mod:`archangel.console.fairness`'s.
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

from telnetlib3.stream_reader import TelnetReader
from telnetlib3.stream_writer import TelnetWriter

from .commands import CommandTable
from .fairness import Pacer, short_gil_slices
from .guard import Digest, Throttle
from .lineedit import Event, Key, LineEditor
from .render import to_json

__all__ = ["Limits", "Session", "Settings"]

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 16  # well above what the reader buffers before pausing


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one session may cost.

    Attributes:
        max_sessions: Sessions open at once; one more is told so and closed.
        max_line: Longest accepted line, in characters; a longer one is refused whole.
        max_output: Longest reply, in bytes; longer ones are cut (JSON ones
            are replaced by a JSON error, so they still parse).
        token_timeout: Seconds a session has to send its token.
        idle_timeout: Seconds a session may go without sending or taking
            anything before it is closed; None for never.
        history: Lines of line-editing history kept per session.
    """

    max_sessions: int = 16
    max_line: int = 4096
    max_output: int = 1 << 20
    token_timeout: float = 30.0
    idle_timeout: float | None = 600.0
    history: int = 100


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every session of one console shares.

    Attributes:
        table: The commands.
        limits: The bounds on each session.
        token: The token every session must send first, if any.
        banner: Returns the banner, when a session begins (so it is up to date).
        prompt: The prompt.
        pacer: Rests the sessions together under load.
        throttle: Limits token checks per peer.
        digest: Sums up warnings about clients.
    """

    table: CommandTable
    limits: Limits
    token: str | None
    banner: Callable[[], str]
    prompt: str
    pacer: Pacer = dataclasses.field(default_factory=Pacer)
    throttle: Throttle = dataclasses.field(default_factory=Throttle)
    digest: Digest = dataclasses.field(default_factory=lambda: Digest(logger))


class Session:
    """The command loop of one connection (runs on the console's loop).

    Implements :class:`~archangel.console.commands.Terminal` for the
    commands it runs.

    Args:
        reader: The connection's telnet reader.
        writer: The connection's telnet writer.
        settings: What the console's sessions share.
        peer: The client's address, for logs (``host:port`` or ``unix socket``).
    """

    def __init__(
        self, reader: TelnetReader, writer: TelnetWriter, settings: Settings, peer: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.peer = peer
        #: The token was accepted (or, with no token, a first line was entered).
        self.authenticated = False
        #: ``time.monotonic()`` when input last came or output last drained.
        self.active = time.monotonic()
        limits = settings.limits
        self.editor = LineEditor(limits.max_line, limits.history, settings.table.complete)
        self.editor.prompt = settings.prompt
        self.more: list[str] | None = None
        #: The command running now (its first word), or None between commands.
        self.command: str | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._typed = ""  # decoded input not fed to the editor yet, from ``_fed`` on
        self._fed = 0
        self._quit = False
        self._eof = False

    @property
    def address(self) -> str:
        """The client's address without its port (``unix socket`` on a Unix socket)."""
        return self.peer.rpartition(":")[0] or self.peer

    @property
    def idle(self) -> float:
        """Seconds since input last came or output last drained."""
        return time.monotonic() - self.active

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
        """Wait up to ``timeout`` s for a key; True if one came or the client left.

        The key is taken from the input (a whole line, from a client in line
        mode); what was typed after it stays for the prompt. The end of the
        line that started the command (the LF or NUL after a CR) is not a key.
        """
        if self._eof or self._take_key():
            return True
        try:
            data = await asyncio.wait_for(self.reader.read(_READ_SIZE), timeout)
        except TimeoutError:
            return False
        self.active = time.monotonic()
        if not data:
            self._eof = True
            return True
        self._typed, self._fed = self._decoder.decode(data), 0
        return self._take_key()

    def _take_key(self) -> bool:
        """Take one key (or one line) from what was typed ahead; False if there is none."""
        if self._events:
            self._events.popleft()
            return True
        rest = self._typed[self._fed :]
        editor = self.editor
        if editor.after_cr and rest[:1] in ("\n", "\x00"):
            rest = rest[1:]  # the end of the line before (CR LF, CR NUL): not a key
            editor.after_cr = False
        self._typed, self._fed = "", 0
        if not rest:
            return False
        ends = [i for i in (rest.find("\r"), rest.find("\n")) if i >= 0]
        if ends:  # a line (a client in line mode): the rest stays typed ahead
            end = min(ends)
            editor.after_cr = rest[end] == "\r"
            self._typed = rest[end + 1 :]
        else:  # a key, or one key's escape sequence
            editor.after_cr = False
        return True

    def quit(self) -> None:
        """End the session after the current reply."""
        self._quit = True

    # -- I/O -----------------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        # In one write (at most max_output): written in pieces of 64 KB, the
        # pieces fragment the allocator's heap, and a few sessions dropped
        # mid-reply left the process 60 MB larger for good.
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")
        self.writer.write(data)
        await self.writer.drain()
        self.active = time.monotonic()

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
            self.active = time.monotonic()
            if not data:
                self._eof = True
            self._typed = self._decoder.decode(data, final=not data)
            self._fed = 0

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Check the token, then read and run commands until the client leaves.

        While the session is open the interpreter's switch interval is kept
        short (:func:`~archangel.console.fairness.short_gil_slices`), so the
        app's loop never waits long for the GIL while this session works.
        """
        with short_gil_slices():
            await self._run()

    async def _run(self) -> None:
        try:
            if self.settings.token is not None and not await self._authenticate():
                return
            await self._send(self.settings.banner() + "\n")
            while not self._quit:
                await self._prompt()
                event = await self._next_event()
                if event is None or event is Key.EOF:
                    break
                self.authenticated = True
                await self._handle(event)
        except (OSError, asyncio.IncompleteReadError) as exc:  # the client went away
            logger.debug("console session %s ended: %s", self.peer, exc or type(exc).__name__)
            # The reader keeps the exception to raise again: with its traceback
            # (this frame, so this session) that is a cycle only the collector breaks.
            exc.__traceback__ = None
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
        self.command = event.split(None, 1)[0]
        try:
            await self._reply(await table.run_line(event, self))
        finally:
            self.command = None

    async def _authenticate(self) -> bool:
        settings = self.settings
        token = settings.token
        assert token is not None
        self.editor.secret = True
        await self._send("token: ")
        try:
            async with asyncio.timeout(settings.limits.token_timeout):
                event = await self._next_event()
        except TimeoutError:
            await self._send("\nno token received: disconnected\n")
            settings.digest.note("no token in time", self.address)
            return False
        self.editor.secret = False
        if event is None:  # gone without a word (a port scan, a health check): no guess
            logger.debug("console: %s left before sending a token", self.peer)
            return False
        # Guessing is throttled per address (not per connection: opening more
        # connections does not check more tokens); the wait is before the check.
        address = self.address
        wait = settings.throttle.reserve(address)
        if wait is None:
            await self._send("\ntoo many bad tokens from your address: try later\n")
            settings.digest.note("token check refused (too many bad tokens)", address)
            return False
        if wait:
            await asyncio.sleep(wait)
        if not isinstance(event, str) or not hmac.compare_digest(
            event.strip().encode("utf-8", "replace"), token.encode()
        ):
            await self._send("\nbad token: disconnected\n")
            settings.digest.note("bad token", address)
            return False
        settings.throttle.refund(address)
        self.authenticated = True
        logger.info("console: session from %s let in (good token)", self.peer)
        return True
