"""``App``: a service runner wiring one manager, one bus and the signal policy.

The App owns no logic of its own beyond the wiring: each part (manager, bus,
signal policy, pidfile, systemd notifier, dumps, console) stands alone. Its
lifecycle is the bus's: ``run()`` walks ENTER → IDLE → START → RUN, waits for
a stop, then STOP → IDLE → EXIT → EXITED; a stop on the way up cancels the
start hooks still running and walks down from there. What the App itself does in each
state is a bus subscriber, at a priority chosen around the users' default 50:

=========  ====  ===========================================================
state      prio  the App's own work
=========  ====  ===========================================================
ENTER        10  install the signal policy, acquire the pidfile
START        90  drop privileges (after user hooks bound their ports), console
RUN          10  systemd READY=1 and watchdog; tell a daemon launcher it runs
STOP         10  systemd STOPPING=1; stop accepting (close every server)
STOP         60  drain: ``manager.shutdown(shutdown_timeout)``
EXIT         90  close the console, release the pidfile, remove the handlers;
                 finish the dumps and cancel the reloads still running
=========  ====  ===========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from . import snapshots, systemd
from .bus import Bus
from .daemon import DaemonHandle, PidFile, drop_privileges
from .errors import ChannelFailures, InvalidArgument, ProcessStateError
from .manager import ProcessManager
from .signals import Action, SignalPolicy
from .states import State

__all__ = ["App"]

logger = logging.getLogger(__name__)


class App:
    """A service: one :class:`ProcessManager`, one :class:`Bus`, servers and signals.

    Lifecycle hooks subscribe to the bus: ``@app.bus.on(State.START)`` binds
    servers with :meth:`serve`, ``@app.bus.on("reload")`` rereads config.

    Args:
        name: The service name (logs, dumps, default dump paths).
        shutdown_timeout: Seconds a graceful stop waits before killing.
        state_file: Where SIGUSR2 writes the state JSON; default
            ``<tmpdir>/<name>.state.json``. A relative path is made absolute
            here, against the current directory, so a daemon's change of
            directory does not move it.
        runlog_file: Where SIGUSR1 writes the runlog JSON; default
            ``<tmpdir>/<name>.runlog.json``; relative paths as ``state_file``.
        signals: A :class:`SignalPolicy`, a mapping of overrides for one, or
            None for the defaults.
        pidfile: Path of a pidfile to hold while running; relative paths as
            ``state_file``.
        user: Drop to this user after START (names or ids).
        group: Drop to this group after START.
        console: Start a management console at START: True for the defaults,
            or a mapping of :class:`archangel.console.Console` arguments.
        history: How many completed processes the manager remembers.
    """

    def __init__(
        self,
        name: str = "archangel",
        *,
        shutdown_timeout: float = 30.0,
        state_file: str | os.PathLike[str] | None = None,
        runlog_file: str | os.PathLike[str] | None = None,
        signals: SignalPolicy | Mapping[Any, Any] | None = None,
        pidfile: str | os.PathLike[str] | None = None,
        user: str | int | None = None,
        group: str | int | None = None,
        console: bool | Mapping[str, Any] = False,
        history: int = 1000,
    ) -> None:
        if shutdown_timeout < 0:
            raise InvalidArgument(f"App {name!r}: shutdown_timeout must be >= 0")
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self.manager = ProcessManager(history, name=name)
        self.bus: Bus[State] = Bus()
        # Absolute now: a daemon changes directory before it writes any of these.
        temp = tempfile.gettempdir()
        self.state_file = os.path.abspath(state_file or os.path.join(temp, f"{name}.state.json"))
        self.runlog_file = os.path.abspath(
            runlog_file or os.path.join(temp, f"{name}.runlog.json")
        )
        self.signals = signals if isinstance(signals, SignalPolicy) else SignalPolicy(signals)
        self.pidfile = PidFile(os.path.abspath(pidfile)) if pidfile is not None else None
        self.user, self.group = user, group
        self.console_options: Mapping[str, Any] | None = (
            {} if console is True else (console or None)
        )
        self.console: Any = None
        #: Set by the ``archangel run --daemon`` launcher: told once RUN is reached.
        self.daemon: DaemonHandle | None = None
        self.servers: list[asyncio.Server] = []
        self.runlog = snapshots.Runlog(self.manager, name)
        self._stop: asyncio.Event | None = None
        self._quick = False
        self._inherited: dict[str, list[Any]] | None = None
        self._watchdog = systemd.Watchdog()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reloads: set[asyncio.Task[Any]] = set()
        self._dump_locks = {"state": asyncio.Lock(), "runlog": asyncio.Lock()}
        self._queued_dumps: dict[str, asyncio.Task[str]] = {}
        self._subscribe()

    def __repr__(self) -> str:
        return f"<App {self.name!r} [{self.bus.state.name}] {self.manager!r}>"

    def _subscribe(self) -> None:
        on = self.bus.subscribe
        on(State.ENTER, self._enter, priority=10)
        on(State.START, self._start, priority=90)
        on(State.RUN, self._ready, priority=10)
        on(State.STOP, self._stop_accepting, priority=10)
        on(State.STOP, self._drain, priority=60)
        on(State.EXIT, self._exit, priority=90)

    # -- running ----------------------------------------------------------------------

    def run(self, *, loop: str = "uvloop") -> int:
        """Run the service to completion on a new loop; returns the exit status.

        Uses uvloop when it is installed, unless ``loop="asyncio"``. The
        status is 0 after a clean stop and 1 if a lifecycle step failed.
        """
        if loop not in ("uvloop", "asyncio"):
            raise InvalidArgument(f"{self!r}: loop must be 'uvloop' or 'asyncio', not {loop!r}")
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
        if loop == "uvloop":
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is a dependency
                logger.info("uvloop is not installed; running on the default loop")
            else:
                factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self.main())

    async def main(self) -> int:
        """Walk the lifecycle on the running loop: up to RUN, wait for a stop, down to EXITED.

        A stop requested on the way up (a START hook still waiting, say)
        cancels the hooks still running and walks down from where the start
        was: STOP, IDLE, EXIT, EXITED. The status is then 0 (the stop was
        asked for), and a daemon's launcher is told the daemon stopped before
        it was ready.
        """
        if self.bus.state is not State.INITIAL:
            raise ProcessStateError(f"{self!r} has already run")
        self._stop = asyncio.Event()
        try:
            started = await self._start_unless_stopped(self._stop)
        except ChannelFailures as exc:
            logger.error("%s could not start: %s", self.name, exc)
            if self.daemon is not None:
                self.daemon.fail(_first_cause(exc))
            return 1
        if not started:
            logger.warning(
                "%s: stop requested during %s: start cancelled",
                self.name,
                self.bus.state.name,
            )
            if self.daemon is not None:
                self.daemon.fail(f"stopped during {self.bus.state.name}, before it was ready")
        await self._stop.wait()
        try:
            await self.bus.transition(State.EXITED)
        except ChannelFailures as exc:
            logger.error("%s did not stop cleanly: %s", self.name, exc)
            return 1
        return 0

    async def _start_unless_stopped(self, stop: asyncio.Event) -> bool:
        """Walk up to RUN unless ``stop`` is set first; whether RUN was reached.

        Raises:
            ChannelFailures: A start hook failed; the bus took the error path.
        """
        starting = asyncio.ensure_future(self.bus.transition(State.RUN))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()  # the bus stays in the state it had entered
                await asyncio.wait((starting,))
        finally:
            stopped.cancel()
            starting.cancel()  # only if main() itself is cancelled
        if starting.cancelled():
            return False
        starting.result()  # raise what the start raised
        return True

    def request_stop(self, *, quick: bool = False) -> None:
        """Ask the service to stop: gracefully, or ``quick`` (kill every process now).

        A quick request during a graceful stop kills what is still draining.
        Call it on the loop's thread (the console hands it over safely).
        """
        if quick:
            self._quick = True
            if self.bus.state is State.STOP:
                self.manager.killall()
        if self._stop is None:
            raise ProcessStateError(f"{self!r} is not running: nothing to stop")
        self._stop.set()

    def reload(self) -> asyncio.Task[Any]:
        """Publish ``reload`` on the bus (SIGHUP); connections stay up.

        Only in RUN: systemd is told RELOADING=1 before and READY=1 after
        (unless a stop began meanwhile). In any other state (starting,
        stopping) the reload is ignored, with a warning in the log, and
        systemd is told nothing. Failures of ``reload`` subscribers are
        logged; the service keeps running.
        """
        task = self._background(self._reload(), "reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return task

    async def _reload(self) -> None:
        if self.bus.state is not State.RUN:
            logger.warning("%s: reload ignored in %s", self.name, self.bus.state.name)
            return
        systemd.reloading()
        try:
            await self.bus.publish("reload")
        except ChannelFailures:
            logger.exception("%s: reload failed; running on with the old settings", self.name)
        finally:
            if self.bus.state is State.RUN:
                systemd.ready()

    async def dump(self, which: str) -> str:
        """Write the ``"state"`` or ``"runlog"`` JSON; returns the path written.

        One write of a file at a time: a dump asked for while one of the same
        file is being written is written once more after it, from the state
        of that moment, and every request made meanwhile shares that write.

        Raises:
            InvalidArgument: ``which`` is neither.
            OSError: The file could not be written.
        """
        if which not in self._dump_locks:
            raise InvalidArgument(f"{self!r}: can dump 'state' or 'runlog', not {which!r}")
        queued = self._queued_dumps.get(which)
        if queued is None or queued.done():
            queued = self._background(self._dump_next(which), f"dump {which}")
            self._queued_dumps[which] = queued
        return await asyncio.shield(queued)

    async def _dump_next(self, which: str) -> str:
        async with self._dump_locks[which]:
            self._queued_dumps.pop(which, None)  # requests from now on queue the next write
            return await self._write_dump(which)

    async def _write_dump(self, which: str) -> str:
        if which == "state":
            # Built in slices: a dump of 50,000 processes must not stall the loop.
            text = await snapshots.state_text(
                self.manager,
                name=self.name,
                bus_state=self.bus.state.name,
                addresses=self.addresses,
            )
            return await snapshots.write_text(self.state_file, text)
        return await snapshots.write_json(self.runlog_file, self.runlog())

    # -- servers ------------------------------------------------------------------------

    async def serve(
        self,
        protocol_factory: Callable[..., Any],
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        fd_name: str | None = None,
        **kwargs: Any,
    ) -> asyncio.Server:
        """Start a server whose every connection is registered with the manager.

        Under systemd socket activation (``LISTEN_FDS``) the inherited socket
        named ``fd_name`` (or the next one) is used instead of binding. With
        ``path`` it is a Unix socket server. Other keyword arguments go to
        ``loop.create_server``.
        """
        loop = asyncio.get_running_loop()
        factory = self.manager.register(protocol_factory)
        sock = self._inherited_socket(fd_name)
        if sock is not None:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock, **kwargs)
            else:
                server = await loop.create_server(factory, sock=sock, **kwargs)
        elif path is not None:
            server = await loop.create_unix_server(factory, path, **kwargs)
        else:
            server = await loop.create_server(factory, host, port, **kwargs)
        self.servers.append(server)
        logger.info("%s: serving on %s", self.name, _addresses(server))
        return server

    def _inherited_socket(self, fd_name: str | None) -> Any:
        if self._inherited is None:
            self._inherited = systemd.listen_sockets()
        if fd_name is not None:
            socks = self._inherited.get(fd_name)
            return socks.pop(0) if socks else None
        for socks in self._inherited.values():
            if socks:
                return socks.pop(0)
        return None

    @property
    def addresses(self) -> list[Any]:
        """Every address the servers listen on."""
        return [addr for server in self.servers for addr in _addresses(server)]

    # -- the App's own lifecycle hooks --------------------------------------------------------

    def _enter(self) -> None:
        self.signals.install(asyncio.get_running_loop(), self.handle_signal)
        if self.pidfile is not None:
            self.pidfile.acquire()

    def _start(self) -> None:
        if self.user is not None or self.group is not None:
            drop_privileges(self.user, self.group)
        if self.console_options is not None:
            from .console import Console

            self.console = Console(self, **self.console_options)
            self.console.start()
            logger.info("%s: console on %s", self.name, self.console.address)

    def _ready(self) -> None:
        systemd.ready(f"{self.name}: running, {len(self.servers)} servers")
        self._watchdog.start()
        if self.daemon is not None:
            self.daemon.ready()

    def _stop_accepting(self) -> None:
        systemd.stopping()
        for server in self.servers:
            server.close()

    async def _drain(self) -> None:
        if self._quick:
            self.manager.killall()
        await self.manager.shutdown(0 if self._quick else self.shutdown_timeout)
        for server in self.servers:
            await server.wait_closed()

    async def _exit(self) -> None:
        self._watchdog.stop()
        if self.console is not None:
            self.console.close()
        if self.pidfile is not None:
            self.pidfile.release()
        self.signals.uninstall()
        # Nothing the App started outlives it. A reload hook may wait on anything:
        # cancel it. A dump is a file write: let it finish.
        for task in self._reloads:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- signals ------------------------------------------------------------------------

    def handle_signal(self, sig: signal.Signals, action: Action) -> None:
        """Carry out one signal's action (the policy calls this on the loop)."""
        if action is Action.GRACEFUL:
            self.request_stop()
        elif action is Action.QUICK:
            self.request_stop(quick=True)
        elif action is Action.IMMEDIATE:
            logger.warning("%s: %s again: exiting at once", self.name, sig.name)
            logging.shutdown()
            os._exit(128 + sig)
        elif action is Action.RELOAD:
            self.reload()
        elif action in (Action.RUNLOG, Action.STATE):
            self._background(self._dump_logged(action.value), f"{action.value} signal")

    async def _dump_logged(self, which: str) -> None:
        try:
            path = await self.dump(which)
        except OSError as exc:
            logger.error("%s: could not write the %s dump: %s", self.name, which, exc)
        else:
            logger.info("%s: %s written to %s", self.name, which, path)

    def _background(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _addresses(server: asyncio.Server) -> list[Any]:
    return [sock.getsockname() for sock in server.sockets]


def _first_cause(exc: BaseException) -> str:
    """The innermost message of a (nested) exception group, for a one-line report."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    with contextlib.suppress(Exception):
        return str(exc) or type(exc).__name__
    return type(exc).__name__
