"""``App``: a service runner wiring one manager, one bus and the signal policy.

The App owns no logic of its own beyond the wiring: each part (manager, bus,
signal policy, pidfile, systemd notifier, dumps, console) stands alone. Its
lifecycle is the bus's: ``run()`` walks ENTER → IDLE → START → RUN, waits for
a stop, then STOP → IDLE → EXIT → EXITED. What the App itself does in each
state is a bus subscriber, at a priority chosen around the users' default 50:

=========  ====  ===========================================================
state      prio  the App's own work
=========  ====  ===========================================================
ENTER        10  install the signal policy, acquire the pidfile
START        90  drop privileges (after user hooks bound their ports), console
RUN          10  systemd READY=1 and watchdog; tell a daemon launcher it runs
STOP         10  systemd STOPPING=1; stop accepting (close every server)
STOP         60  drain: ``manager.shutdown(shutdown_timeout)``
EXIT         90  close the console, release the pidfile, remove the handlers
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
            ``<tmpdir>/<name>.state.json``.
        runlog_file: Where SIGUSR1 writes the runlog JSON; default
            ``<tmpdir>/<name>.runlog.json``.
        signals: A :class:`SignalPolicy`, a mapping of overrides for one, or
            None for the defaults.
        pidfile: Path of a pidfile to hold while running.
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
        temp = tempfile.gettempdir()
        self.state_file = os.fspath(state_file or os.path.join(temp, f"{name}.state.json"))
        self.runlog_file = os.fspath(runlog_file or os.path.join(temp, f"{name}.runlog.json"))
        self.signals = signals if isinstance(signals, SignalPolicy) else SignalPolicy(signals)
        self.pidfile = PidFile(pidfile) if pidfile is not None else None
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
        """Walk the lifecycle on the running loop: up to RUN, wait for a stop, down to EXITED."""
        if self.bus.state is not State.INITIAL:
            raise ProcessStateError(f"{self!r} has already run")
        self._stop = asyncio.Event()
        try:
            await self.bus.transition(State.RUN)
        except ChannelFailures as exc:
            logger.error("%s could not start: %s", self.name, exc)
            if self.daemon is not None:
                self.daemon.fail(_first_cause(exc))
            return 1
        await self._stop.wait()
        try:
            await self.bus.transition(State.EXITED)
        except ChannelFailures as exc:
            logger.error("%s did not stop cleanly: %s", self.name, exc)
            return 1
        return 0

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

        systemd is told RELOADING=1 before and READY=1 after. Failures of
        ``reload`` subscribers are logged; the service keeps running.
        """
        return self._background(self._reload(), "reload")

    async def _reload(self) -> None:
        systemd.reloading()
        try:
            await self.bus.publish("reload")
        except ChannelFailures:
            logger.exception("%s: reload failed; running on with the old settings", self.name)
        finally:
            systemd.ready()

    async def dump(self, which: str) -> str:
        """Write the ``"state"`` or ``"runlog"`` JSON; returns the path written.

        Raises:
            InvalidArgument: ``which`` is neither.
            OSError: The file could not be written.
        """
        if which == "state":
            data = snapshots.state(
                self.manager,
                name=self.name,
                bus_state=self.bus.state.name,
                addresses=self.addresses,
            )
            return await snapshots.write_json(self.state_file, data)
        if which == "runlog":
            return await snapshots.write_json(self.runlog_file, self.runlog())
        raise InvalidArgument(f"{self!r}: can dump 'state' or 'runlog', not {which!r}")

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

    def _exit(self) -> None:
        self._watchdog.stop()
        if self.console is not None:
            self.console.close()
        if self.pidfile is not None:
            self.pidfile.release()
        self.signals.uninstall()

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
            self._background(self._dump_logged(action.value), f"dump {action.value}")

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
