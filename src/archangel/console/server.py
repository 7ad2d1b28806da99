"""``Console``: the management console's lifecycle, thread, loop and listening socket.

A :class:`Console` owns one thread running its own event loop. ``start()``
binds (TCP on 127.0.0.1 by default, or a Unix socket created 0600) and
returns once it listens; ``close()`` stops the sessions and the thread.
Sessions, commands and formatting live in their own modules; this one only
wires them: it is not where commands are defined.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConsoleError
from ..kernel.manager import ProcessManager
from .actions import action_commands
from .commands import Command, CommandTable, Context, Handler, plural
from .diagnostics import diagnostic_commands
from .guard import Digest
from .listen import bind_unix, is_loopback, remove_unix
from .listing import listing_commands
from .protocol import ConsoleProtocol, describe_peer
from .session import Limits, Settings
from .sessions import SessionProcess, session_commands
from .table import SessionTable
from .tasks import task_commands
from .thread import OperatorThread

__all__ = ["Console"]

logger = logging.getLogger(__name__)


def _unwrap(target: Any) -> tuple[ProcessManager, Any]:
    if isinstance(target, ProcessManager):
        return target, None
    manager = getattr(target, "manager", None)
    if isinstance(manager, ProcessManager):
        return manager, target
    raise ConsoleError(
        f"console target {target!r} is neither a ProcessManager nor an App with a .manager"
    )


class _Refused(asyncio.Protocol):
    """A connection over the session limit: told so, then closed.

    ``refused`` is called with the client's address (``host``, or ``unix
    socket``) when it is told, so the warning can say where refusals come from.
    """

    def __init__(
        self,
        message: bytes,
        made: Callable[[asyncio.BaseTransport], None],
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self._message = message
        self._made = made
        self._refused = refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made(transport)
        assert isinstance(transport, asyncio.WriteTransport)
        if not self._message:
            transport.abort()
            return
        if self._refused is not None:
            peer = describe_peer(transport.get_extra_info("peername"))
            self._refused(peer.rpartition(":")[0] or peer)
        transport.write(self._message)
        transport.close()


class Console(OperatorThread):
    """A telnet management console on its own thread and loop.

    Args:
        target: A :class:`~archangel.ProcessManager`, or an App-like object
            with ``.manager`` (and ``.bus``, ``request_stop()``, ``reload()``,
            ``async dump(which)`` for the commands that use them).
        host: Address to bind; loopback by default. Any other address needs
            a ``token``.
        port: TCP port; 0 picks a free one (see :attr:`address`).
        path: Listen on this Unix socket (created with mode 0600) instead of TCP.
        token: A secret every session must send as its first line.
        repl: Enable the ``py CODE`` command (runs any code: off by default).
        commands: More commands for this console (:class:`~archangel.console.Command`);
            one with a built-in's name replaces it. See also :meth:`command`.
        locals: More names for ``py`` to see (besides ``manager``, ``app``
            and ``asyncio``).
        max_sessions: Sessions open at once.
        max_line: Longest accepted input line, in characters.
        max_output: Longest reply of one command, in bytes.
        action_timeout: Seconds an action waits for the app loop before
            answering that the loop is blocked and the action is queued.
        token_timeout: Seconds a session has to send its token.
        idle_timeout: Seconds a session may go without sending anything or
            taking any output before it is closed (10 minutes by default;
            ``top`` keeps a session busy); None for never.

    Raises:
        ConsoleError: A bad target or setting, or a non-loopback ``host``
            without a ``token``.

    Use it as a context manager (``with Console(manager) as console:`` from
    the app's loop starts it and closes it), or call :meth:`start` and
    :meth:`close`.
    """

    what = "console"
    title = "console"
    error = ConsoleError

    def __init__(
        self,
        target: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str | os.PathLike[str] | None = None,
        token: str | None = None,
        repl: bool = False,
        *,
        commands: Iterable[Command] = (),
        locals: Mapping[str, Any] | None = None,
        max_sessions: int = 16,
        max_line: int = 4096,
        max_output: int = 1 << 20,
        action_timeout: float = 1.0,
        token_timeout: float = 30.0,
        idle_timeout: float | None = 600.0,
    ) -> None:
        manager, self.app = _unwrap(target)
        super().__init__(manager)
        self.host = host
        self.port = port
        self.path = os.fspath(path) if path is not None else None
        if token is not None and (not token or token != token.strip() or "\n" in token):
            raise ConsoleError("console token must be a non-empty line without outer spaces")
        if self.path is None and not is_loopback(host) and token is None:
            raise ConsoleError(
                f"console on {host}:{port} would be reachable from other hosts: "
                "a token is required (or bind to 127.0.0.1 or a Unix socket)"
            )
        if not 0 <= port <= 65535:
            raise ConsoleError(f"console port must be 0..65535, not {port}")
        timeouts = (action_timeout, token_timeout, 1.0 if idle_timeout is None else idle_timeout)
        if min(max_sessions, max_line, max_output) < 1 or min(timeouts) <= 0:
            raise ConsoleError("console limits and timeouts must be positive")
        self.token = token
        self.repl = repl
        self.limits = Limits(max_sessions, max_line, max_output, token_timeout, idle_timeout)
        self.action_timeout = action_timeout
        self._commands: list[Command] = []
        for command in commands:
            self._add(command)
        self.locals: dict[str, Any] = dict(locals or {})
        #: The console's own manager of its sessions (kind ``console``; console thread only).
        self.sessions = ProcessManager(history=100, name="console sessions")
        self._address: tuple[str, int] | str | None = None
        self._unix_inode: int | None = None
        # Console-thread state:
        self._table = SessionTable(self.limits)
        self._closing = False
        self._created = self._made = 0  # protocols created, and given their transport
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: weakref.WeakSet[Any] = weakref.WeakSet()
        self._digest = Digest(logger)

    def __repr__(self) -> str:
        where = self._describe(self._address) if self._address else self._describe(None)
        return f"<Console {where} [{self._state.value}]>"

    def _describe(self, address: tuple[str, int] | str | None) -> str:
        if address is None:
            return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        if isinstance(address, str):
            return f"unix:{address}"
        return f"{address[0]}:{address[1]}"

    @property
    def address(self) -> tuple[str, int] | str | None:
        """The bound ``(host, port)``, or the Unix socket path; None until started."""
        return self._address

    # -- commands of this console -----------------------------------------------------------

    def _add(self, command: Command) -> None:
        if not isinstance(command, Command):
            raise ConsoleError(f"console command {command!r} is not an archangel.console.Command")
        if not command.name or not command.name.isprintable() or " " in command.name:
            raise ConsoleError(f"console command name {command.name!r} must be one word")
        if not self._is_new():
            raise ConsoleError(f"{self!r}: commands are added before start(), not after")
        self._commands.append(command)

    def command(
        self,
        name: str | None = None,
        *,
        help: str = "",
        usage: str | None = None,
        details: str | None = None,
        changes: bool = False,
        app_loop: bool = False,
        complete: Callable[[str], Iterable[str]] | None = None,
        raw: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Add a command to this console, as a decorator (before :meth:`start`).

        The function is called as ``fn(args, terminal)`` with the words
        after the command name; it returns the text to show (or an
        awaitable of it). Raise :class:`~archangel.console.CommandError` for
        bad input: the operator sees ``error: <message>``.

        Args:
            name: What the operator types (default: the function's name).
            help: One line for the ``help`` list (default: the docstring's first line).
            usage: The synopsis ``help NAME`` shows (default: the name).
            details: More text for ``help NAME`` (default: the rest of the docstring).
            changes: It changes something: Enter on an empty line never repeats it.
            app_loop: Run it on the app loop's thread (needed to touch the
                app's objects) instead of the console's.
            complete: Given the word being typed, the candidates Tab offers.
            raw: Pass the rest of the line as one unsplit argument.

        Raises:
            ConsoleError: The console has started, or the name is not one word.
        """

        def decorate(fn: Handler) -> Handler:
            doc = inspect.cleandoc(fn.__doc__ or "")
            first, _, rest = doc.partition("\n")
            command_name = str(name or getattr(fn, "__name__", ""))
            self._add(
                Command(
                    command_name,
                    fn,
                    usage or command_name,
                    help or first,
                    rest.strip() if details is None else details,
                    changes=changes,
                    raw=raw,
                    complete=complete,
                    app_loop=app_loop,
                )
            )
            return fn

        return decorate

    # -- lifecycle (any thread) ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start listening on the console's own thread; return once it listens.

        Args:
            loop: The app's loop, where actions run. Defaults to the running
                loop (call ``start()`` from the app's loop, or pass it).

        Raises:
            ConsoleError: Already started, no loop, or the address cannot be
                bound (in use, not permitted...); the message names the address.
        """
        self._launch(self._app_loop(loop), self._describe(None))
        if self.repl:
            logger.warning(
                "console on %s has the Python REPL enabled: anyone who can connect "
                "runs code in this process",
                self._describe(self._address),
            )

    async def _serve(self) -> None:
        assert self._stop is not None
        try:
            server = await self._listen()
        except (OSError, ConsoleError) as exc:
            self._cannot_listen(exc)
            return
        self._listening()
        assert self._apploop is not None
        watch = asyncio.create_task(self._apploop.watch())
        sweep = asyncio.create_task(self._table.sweep())
        try:
            await self._stop.wait()
        finally:
            watch.cancel()
            sweep.cancel()
            # Stop accepting, but let accepts under way create their transports
            # before server.close(): on 3.11 a transport created after it fails
            # half-made and leaks its socket. Late arrivals are aborted at once.
            loop = asyncio.get_running_loop()
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
            self._closing = True
            await asyncio.gather(watch, sweep, return_exceptions=True)
            for _ in range(100):
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                for transport in list(self._transports):
                    transport.abort()
                for _ in range(2):  # let aborted transports close their sockets
                    await asyncio.sleep(0)
                if self._made == self._created and not self._tasks:
                    break
            server.close()
            await server.wait_closed()
            self._digest.close()
            self._table.close()
            if self.path is not None and self._unix_inode is not None:
                remove_unix(self.path, self._unix_inode)

    def _settings(self) -> Settings:
        assert self._apploop is not None
        namespace = {"manager": self.manager, "app": self.app, "asyncio": asyncio, **self.locals}
        context = Context(
            self.manager,
            self.app,
            self._apploop,
            repl=self.repl,
            namespace=namespace,
            action_timeout=self.action_timeout,
            sessions=lambda: self._table.taken,
            max_output=self.limits.max_output,
            console_sessions=self.sessions,
        )
        table = CommandTable(
            context,
            (
                listing_commands(context),
                diagnostic_commands(context),
                task_commands(context, self.action_timeout),
                action_commands(context, self.action_timeout),
                session_commands(context, self.sessions),
                self._commands,
            ),
        )
        what = f"app {getattr(self.app, 'name', '')!s}".rstrip() if self.app else "manager"
        warning = "\nWARNING: 'py' is enabled: this console runs any Python code you type"
        manager = self.manager

        def banner() -> str:  # when a session begins: the count then, not at start
            text = (
                f"archangel console ({what}): {plural(len(manager), 'process', 'processes')} "
                "running; "
                "type 'help' for commands"
            )
            return text + warning if self.repl else text

        return Settings(table, self.limits, self.token, banner, "archangel> ", digest=self._digest)

    async def _listen(self) -> asyncio.Server:
        settings = self._settings()
        refusal = f"too many sessions ({self.limits.max_sessions} open): try later\r\n".encode()

        def refused(address: str) -> None:  # one line per interval, by address (Digest)
            self._digest.note("session refused (the session table is full)", address)

        def factory() -> asyncio.Protocol:
            self._created += 1
            if self._closing:
                return _Refused(b"", self._made_one)
            if not self._table.admit():
                return _Refused(refusal, self._made_one, refused)
            return ConsoleProtocol(settings, self._opened, self._table.released, self._made_one)

        loop = asyncio.get_running_loop()
        if self.path is not None:
            sock, inode = bind_unix(self.path)
            try:
                server = await loop.create_unix_server(factory, sock=sock)
            except BaseException:
                sock.close()
                remove_unix(self.path, inode)
                raise
            self._unix_inode = inode
            self._address = self.path
        else:
            server = await loop.create_server(factory, self.host, self.port)
            host, port = server.sockets[0].getsockname()[:2]
            self._address = (host, port)
        return server

    def _made_one(self, transport: asyncio.BaseTransport) -> None:
        self._made += 1
        self._transports.add(transport)

    def _opened(self, protocol: ConsoleProtocol) -> None:
        assert protocol.session is not None
        task = asyncio.get_running_loop().create_task(protocol.session.run())
        protocol.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        process = self.sessions.register(SessionProcess(protocol.session))
        process.connection_made(protocol.connection)  # kill() aborts the connection
        task.add_done_callback(lambda _: process.connection_lost(None))
        self._table.opened(protocol)
