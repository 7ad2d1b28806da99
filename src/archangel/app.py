"""``App``: a service runner wiring one manager, one bus and the signal policy.

The App owns no logic of its own beyond the wiring: each part (manager, bus,
signal policy, pidfile, systemd notifier, dumps, console) stands alone. Its
lifecycle is the bus's: ``run()`` walks ENTER → IDLE → START → RUN, waits for
a stop, then STOP → IDLE → EXIT → EXITED; a stop on the way up cancels the
start hooks still running and walks down from there. What the App itself does in each
state is a bus subscriber, at a priority chosen around the users' default 50.
This table is ``App._HOOKS``, the data ``_subscribe`` walks (a test holds this
copy and the one in ``docs/app.rst`` to it):

=========  ====  ===========================================================
state      prio  the App's own work
=========  ====  ===========================================================
ENTER        10  install the signal policy, acquire the pidfile
START        90  drop privileges (after user hooks bound their ports), console, web
RUN          10  systemd READY=1 and watchdog; tell a daemon's launcher it runs;
                 start the periodic runlog and statistics
STOP         10  systemd STOPPING=1; stop accepting (close every server);
                 stop the periodic runlog and statistics
STOP         55  served frameworks: stop their connections, aiohttp's on_shutdown
STOP         60  drain: ``manager.shutdown(what is left of shutdown_timeout)``
STOP         70  served frameworks: aiohttp's on_cleanup, the ASGI lifespan shutdown
EXIT         90  close the console and web, release the pidfile, remove the handlers;
                 finish the dumps and cancel the reloads still running
=========  ====  ===========================================================

A stop is bounded as a whole: ``shutdown_timeout`` counts from the first stop
request, the drain gets what is left of it, and the walk down from RUN has a
deadline :data:`STOP_GRACE` seconds later, at which STOP, IDLE, EXIT and
EXITED subscribers still awaiting are cancelled (see
:meth:`archangel.bus.Bus.transition`). The exit status tells a clean stop
(:data:`EXIT_OK`) from a failed step or a supervisor that gave up
(:data:`EXIT_FAILED`) and a stop that had to kill or cancel at the deadline
(:data:`EXIT_FORCED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from .bus.bus import Bus
from .bus.states import State
from .bus.timers import Timer
from .errors import (
    ChannelFailures,
    FrameworkError,
    InvalidArgument,
    ProcessStateError,
    check_number,
)
from .kernel.frames import innermost
from .kernel.holders import hold
from .kernel.manager import ProcessManager
from .kernel.process import Process
from .service import asgi, dumps, frameworks, sidecar, statistics, streams, systemd
from .service.daemon import DaemonHandle, PidFile, drop_privileges
from .service.signals import Action, Binding, SignalPolicy

__all__ = ["EXIT_FAILED", "EXIT_FORCED", "EXIT_OK", "LEAVE_GRACE", "STOP_GRACE", "App"]

logger = logging.getLogger(__name__)

#: Exit status of a clean run: stopped when asked, everything ended in time.
EXIT_OK = 0
#: Exit status when a lifecycle step failed (a START hook raised, say), or when a
#: top-level supervisor gave up and stopped the App (``Supervisor(on_give_up="stop")``).
EXIT_FAILED = 1
#: Exit status when the stop was forced: at the shutdown deadline, processes were
#: killed or at-exit hooks or STOP/EXIT subscribers cancelled. 2 is a usage error.
EXIT_FORCED = 3

#: Seconds past ``shutdown_timeout`` that the walk down from RUN may take: the drain
#: kills and cancels at the deadline, and that lands in a moment; STOP and EXIT
#: subscribers still awaiting then are cancelled (see ``channels.DEADLINE_GRACE``).
STOP_GRACE = 1.0


#: Seconds the tasks still running after the lifecycle ended get to unwind once
#: cancelled, and that asynchronous generators and the default executor get to
#: close, before the loop is closed without them.
LEAVE_GRACE = 1.0


def _leave(loop: asyncio.AbstractEventLoop, name: str) -> bool:
    """Cancel what still runs on ``loop`` and close its generators, each bounded.

    What ``asyncio.Runner`` does on its way out, with a bound: a task that
    ignores its cancellation (catching ``CancelledError`` and going on) would
    keep the Runner, and so the service, from ever ending. Such a task is
    logged with where it runs and left behind; returns True if one was.
    """
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    left: set[asyncio.Task[Any]] = set()
    if tasks:
        _, left = loop.run_until_complete(asyncio.wait(tasks, timeout=LEAVE_GRACE))
    for task in tasks - left:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during the App's exit",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    for task in left:
        logger.warning(
            "%s: task %r ignored its cancellation for %g s; left behind, waiting at %s",
            name,
            task.get_name(),
            LEAVE_GRACE,
            innermost(task.get_coro()) or "?",
        )
        # Said once, here: not again as "Task was destroyed but it is pending!"
        # when the closed loop's last reference to it goes.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    closings = {
        "asynchronous generators": loop.shutdown_asyncgens(),
        "the default executor's threads": loop.shutdown_default_executor(),
    }
    for what, closing in closings.items():
        try:
            loop.run_until_complete(asyncio.wait_for(closing, LEAVE_GRACE))
        except TimeoutError:
            logger.warning("%s: %s did not end within %g s", name, what, LEAVE_GRACE)
    return bool(left)


class App:
    """A service: one :class:`ProcessManager`, one :class:`Bus`, servers and signals.

    Lifecycle hooks subscribe to the bus: ``@app.bus.on(State.START)`` binds
    servers with :meth:`serve`, ``@app.bus.on("reload")`` rereads config.

    Args:
        name: The service name (logs, dumps, default dump paths).
        shutdown_timeout: Seconds the whole stop may take, counted from the
            first stop request: STOP subscribers, the graceful end of every
            process, at-exit hooks, EXIT subscribers. What is still running then
            is killed or cancelled (within :data:`STOP_GRACE` more seconds) and
            the exit status is :data:`EXIT_FORCED`.
        state_file: Where SIGUSR2 writes the state JSON; default
            ``<tmpdir>/<name>.state.json``. A relative path is made absolute
            here, against the current directory, so a daemon's change of
            directory does not move it.
        runlog_file: Where SIGUSR1 writes the runlog JSON; default
            ``<tmpdir>/<name>.runlog.json``; relative paths as ``state_file``.
        signals: A :class:`SignalPolicy`, a mapping of overrides for one, or
            None for the defaults. A signal maps to an action name, a callable
            (``{"USR1": my_callback}``, called with the signal; async ones run
            as tasks) or a bus channel's name (``{"HUP": "my-channel"}``,
            published with the signal), or a list of them, one per delivery.
            The handlers the App replaced are put back when it exits.
        pidfile: Path of a pidfile to hold while running; relative paths as
            ``state_file``.
        user: Drop to this user after START (names or ids).
        group: Drop to this group after START.
        console: Start a management console at START: True for the defaults,
            or a mapping of :class:`archangel.console.Console` arguments.
        web: Serve metrics, health probes and the dashboard at START (the ``web`` extra):
            True for the defaults, or a mapping of
            :class:`archangel.web.WebServer` arguments (``host``, ``port``,
            ``token``, ``block_threshold``...). Checked here: a non-loopback
            ``host`` without a ``token`` raises :class:`~archangel.errors.WebError`.
            Under ``run(workers=N)`` the master serves it over every worker,
            each worker its own on a private Unix socket (see :doc:`/workers`).
        history: How many completed processes the manager remembers (the
            state dump holds them).
        runlog_interval: Write the runlog every this many seconds while
            running (RUN until STOP), as SIGUSR1 does; None (the default): only
            when asked. pyzenkit's periodic ``save_runlog``.
        stats_interval: Log one INFO line of statistics every this many
            seconds while running: the counters and their increments and
            speeds since the previous line (see :doc:`/statistics`); None
            (the default): never. pyzenkit's ``log_statistics``.

    The state dump (SIGUSR2) holds what the application adds: every
    subscriber of the bus channel ``"state"`` (``@app.bus.on("state")``) is
    called as the dump is built, and what it returns is written under
    ``"app"``, keyed by its name (see :doc:`/statistics`).

    Raises:
        InvalidArgument: ``name`` is not a str, ``shutdown_timeout`` is not a
            number of seconds ``>= 0`` (a str such as ``"30"``, a bool, NaN,
            a negative number), ``history`` is not an int ``>= 0``, or
            ``runlog_interval`` or ``stats_interval`` is neither None nor a
            positive, finite number of seconds; the message names the
            argument and the value given.
    """

    #: The bus channel whose subscribers' results the state dump holds (pyzenkit's ``get_state``).
    STATE_CHANNEL = "state"

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
        web: bool | Mapping[str, Any] = False,
        history: int = 1000,
        runlog_interval: float | None = None,
        stats_interval: float | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise InvalidArgument(f"App name must be a str, got {name!r}")
        check_number(shutdown_timeout, f"App {name!r}: shutdown_timeout")
        check_number(history, f"App {name!r}: history", integer=True)
        self.runlog_interval = _interval(name, "runlog_interval", runlog_interval)
        self.stats_interval = _interval(name, "stats_interval", stats_interval)
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
        self.console_options: Mapping[str, Any] | None = None
        if console is not False and console is not None:
            from .console import Console  # telnetlib3: only for an App with a console

            self.console_options = _options(name, "console", console, Console)
        self.console: Any = None
        #: The :class:`archangel.web.WebServer`, made here, started at START.
        self.web: Any = None
        #: The options the web server was made with (for a master of workers and its workers).
        self.web_options: dict[str, Any] | None = None
        if web is not False and web is not None:
            self.web_options = _web_options(name, web)
            self.web = _web_server(self, self.web_options)
        #: Reloads run so far (each ``reload`` published on the bus), for the metrics.
        self.reload_count = 0
        #: Dumps written so far, by kind, for the metrics.
        self.dump_counts = {"state": 0, "runlog": 0}
        #: Set by the ``archangel run --daemon`` launcher: told once RUN is reached.
        self.daemon: DaemonHandle | None = None
        self.servers: list[asyncio.Server] = []
        self.runlog = dumps.Runlog(self.manager, name)
        self._writer = dumps.Writer()  # the dumps' files, and the writes under way
        self._stats_line: statistics.Statistics | None = None  # made at RUN, on the loop's clock
        self._periodic: list[Timer] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline: float | None = None  # loop time: the stop's shutdown_timeout ends
        self._quick = False
        self._forced = False  # the drain had to kill or cancel at the deadline
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._inherited: dict[str, list[Any]] | None = None
        #: In a worker of ``run(workers=N)``: asks the master for each listening socket.
        self.socket_broker: Callable[..., socket.socket] | None = None
        self._servings: list[frameworks.Serving] = []
        self._watchdog = systemd.Watchdog()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reloads: set[asyncio.Task[Any]] = set()
        self._dump_locks = {"state": asyncio.Lock(), "runlog": asyncio.Lock()}
        self._queued_dumps: dict[str, asyncio.Task[str]] = {}
        # Why a top-level supervisor of the manager gave up, if one did: the exit
        # status is then EXIT_FAILED.
        self._gave_up: str | None = None
        self.manager.give_up_handler = self._supervisor_gave_up
        self._subscribe()

    def __repr__(self) -> str:
        return f"<App {self.name!r} [{self.bus.state.name}] {self.manager!r}>"

    @property
    def stopping(self) -> bool:
        """True from the first stop request on (``/readyz`` turns unready then)."""
        return self._stop is not None and self._stop.is_set()

    #: The App's own lifecycle hooks, the table the module docstring and
    #: docs/app.rst show: ``(state, priority, hook, what it does)``. A hook is an
    #: App method that :meth:`_subscribe` subscribes; a ``Serving.`` hook is
    #: subscribed per served framework, by ``_add_serving``.
    _HOOKS: ClassVar[tuple[tuple[State, int, str, str], ...]] = (
        (State.ENTER, 10, "_enter", "install the signal policy, acquire the pidfile"),
        (
            State.START,
            90,
            "_start",
            "drop privileges (after user hooks bound their ports), console, web",
        ),
        (
            State.RUN,
            10,
            "_ready",
            "systemd READY=1 and watchdog; tell a daemon's launcher it runs; "
            "start the periodic runlog and statistics",
        ),
        (
            State.STOP,
            10,
            "_stop_accepting",
            "systemd STOPPING=1; stop accepting (close every server); "
            "stop the periodic runlog and statistics",
        ),
        (
            State.STOP,
            55,
            "Serving.stopping",
            "served frameworks: stop their connections, aiohttp's on_shutdown",
        ),
        (
            State.STOP,
            60,
            "_drain",
            "drain: ``manager.shutdown(what is left of shutdown_timeout)``",
        ),
        (
            State.STOP,
            70,
            "Serving.stopped",
            "served frameworks: aiohttp's on_cleanup, the ASGI lifespan shutdown",
        ),
        (
            State.EXIT,
            90,
            "_exit",
            "close the console and web, release the pidfile, remove the handlers; "
            "finish the dumps and cancel the reloads still running",
        ),
    )

    def _subscribe(self) -> None:
        """Subscribe the App's own hooks: the rows of :attr:`_HOOKS` naming an App method."""
        for state, priority, hook, _ in self._HOOKS:
            if not hook.startswith("Serving."):  # those come with each served framework
                self.bus.subscribe(state, getattr(self, hook), priority=priority)

    # -- running ----------------------------------------------------------------------

    def run(self, *, loop: str = "uvloop", workers: int | str | None = None) -> int:
        """Run the service to completion on a new loop; returns the exit status.

        Uses uvloop when it is installed, unless ``loop="asyncio"``. The
        status is :data:`EXIT_OK` (0) after a clean stop, :data:`EXIT_FAILED`
        (1) if a lifecycle step failed or a top-level supervisor gave up (that
        wins over a forced stop), and :data:`EXIT_FORCED` (3) if the stop ran
        out of ``shutdown_timeout`` and had to kill or cancel.

        ``workers`` (a count, or ``"auto"`` for the usable cores) other than
        1 makes this process a master that forks that many workers, each
        running this App, and supervises them (see :doc:`/workers`).
        """
        if loop not in ("uvloop", "asyncio"):
            raise InvalidArgument(f"{self!r}: loop must be 'uvloop' or 'asyncio', not {loop!r}")
        if workers is not None and workers != 1:
            from .service.workers import Master

            return Master(self, workers, loop=loop).run()
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
        if loop == "uvloop":
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is a dependency
                logger.info("uvloop is not installed; running on the default loop")
            else:
                factory = uvloop.new_event_loop
        event_loop = factory()
        status = EXIT_FAILED
        try:
            status = event_loop.run_until_complete(self.main())
        finally:
            try:
                if _leave(event_loop, self.name) and status == EXIT_OK:
                    status = EXIT_FORCED
            finally:
                event_loop.close()
        return status

    async def main(self) -> int:
        """Walk the lifecycle on the running loop: up to RUN, wait for a stop, down to EXITED.

        A stop requested on the way up (a START hook still waiting, say)
        cancels the hooks still running and walks down from where the start
        was: STOP, IDLE, EXIT, EXITED. The status is then 0 (the stop was
        asked for), and a daemon's launcher is told the daemon stopped before
        it was ready.

        The walk down has a deadline: ``shutdown_timeout`` after the first
        stop request, plus :data:`STOP_GRACE`. Returns the exit status, as
        :meth:`run` does.
        """
        if self.bus.state is not State.INITIAL:
            raise ProcessStateError(f"{self!r} has already run")
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            started = await self._start_unless_stopped(self._stop)
        except ChannelFailures as exc:
            logger.error("%s could not start: %s", self.name, _causes(exc))
            if self.daemon is not None:
                self.daemon.fail(_first_cause(exc))
            return EXIT_FAILED
        if not started:
            logger.warning(
                "%s: stop requested during %s: start cancelled",
                self.name,
                self.bus.state.name,
            )
            if self.daemon is not None:
                self.daemon.fail(f"stopped during {self.bus.state.name}, before it was ready")
        await self._stop.wait()
        assert self._deadline is not None  # set with the stop request
        try:
            walked = await self.bus.transition(State.EXITED, deadline=self._deadline + STOP_GRACE)
        except ChannelFailures as exc:
            logger.error("%s did not stop cleanly: %s", self.name, exc)
            return EXIT_FAILED
        if self._forced or not walked.kept:
            logger.warning(
                "%s: stop forced: not everything ended within shutdown_timeout (%g s)",
                self.name,
                self.shutdown_timeout,
            )
        if self._gave_up is not None:
            logger.error("%s: exiting with status %d: %s", self.name, EXIT_FAILED, self._gave_up)
            return EXIT_FAILED
        return EXIT_FORCED if self._forced or not walked.kept else EXIT_OK

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

        The first request starts the stop's clock: everything must end within
        ``shutdown_timeout`` from now (see :class:`App`); later requests do not
        move it. A quick request kills every process at once, during a
        graceful stop what is still draining; at-exit hooks still run, within
        what is left of the timeout. Call it on the loop's thread (the console
        hands it over safely).

        Raises:
            ProcessStateError: The service is not running.
        """
        if self._stop is None or self._loop is None:
            raise ProcessStateError(f"{self!r} is not running: nothing to stop")
        if self._deadline is None:
            self._deadline = self._loop.time() + self.shutdown_timeout
        if quick:
            self._quick = True
            if self.bus.state is State.STOP:
                self.manager.killall()
        self._stop.set()

    def reload(self) -> asyncio.Task[Any]:
        """Publish ``reload`` on the bus (SIGHUP); connections stay up.

        Only in RUN: systemd is told RELOADING=1 before and READY=1 after
        (unless a stop began meanwhile). In any other state (starting,
        stopping) the reload is ignored, with a warning in the log, and
        systemd is told nothing. Failures of ``reload`` subscribers are
        logged; the service keeps running.

        Reloads never overlap: one asked for while another runs is run once
        after it, however many were asked for meanwhile (they coalesce), and
        the task returned is the one running them both. systemd is told
        RELOADING=1 as each begins (with a fresh MONOTONIC_USEC, which a
        ``Type=notify-reload`` unit waits for after its own SIGHUP) and READY=1
        once, after the last.

        Returns:
            The task that runs the reload; it ends once the reload is over.
        """
        running = self._reloading
        if running is not None and not running.done() and self.bus.state is State.RUN:
            self._reload_again = True
            return running
        task = hold(self._reloads, self._background(self._reload(), "reload"))
        self._reloading = task
        return task

    async def _reload(self) -> None:
        if self.bus.state is not State.RUN:
            logger.warning("%s: reload ignored in %s", self.name, self.bus.state.name)
            return
        try:
            while True:
                self._reload_again = False
                systemd.reloading()
                self.reload_count += 1
                try:
                    await self.bus.publish("reload")
                except ChannelFailures:
                    logger.exception(
                        "%s: reload failed; running on with the old settings", self.name
                    )
                if not self._reload_again or self.bus.state is not State.RUN:
                    break
                logger.info("%s: reload asked for during the reload: reloading again", self.name)
        finally:
            self._reload_again = False
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
        path = await self._write_dump_file(which)
        self.dump_counts[which] += 1
        return path

    async def _write_dump_file(self, which: str) -> str:
        if which == "state":
            # Built in slices: a dump of 50,000 processes must not stall the loop.
            text = await dumps.state_text(
                self.manager,
                name=self.name,
                bus_state=self.bus.state.name,
                addresses=self.addresses,
                settings=self.settings(),
                app=await self._app_state(),
            )
            return await self._writer.write_text(self.state_file, text)
        return await self._writer.write_json(self.runlog_file, self.runlog())

    def settings(self) -> dict[str, Any]:
        """What the App runs with, as the state dump writes it (JSON-ready)."""
        return {
            "name": self.name,
            "shutdown_timeout": self.shutdown_timeout,
            "signals": {
                sig.name: [_binding_text(b) for b in bindings]
                for sig, bindings in self.signals.table.items()
            },
            "pidfile": self.pidfile.path if self.pidfile is not None else None,
            "state_file": self.state_file,
            "runlog_file": self.runlog_file,
            "runlog_interval": self.runlog_interval,
            "stats_interval": self.stats_interval,
            "user": self.user,
            "group": self.group,
            "console": self._console_entry(),
            "history": self.manager.history.maxlen,
        }

    def _console_entry(self, console: Any = None) -> dict[str, Any] | None:
        """The console's address once started (``host`` and ``port``, or ``path``), or None.

        ``console`` is the App's own by default (a master of workers passes
        its :class:`~archangel.console.workers.MasterConsole`). Never its
        token (a secret): only whether one is asked for.
        """
        if self.console_options is None:
            return None
        console = console if console is not None else self.console
        address = console.address if console is not None else None
        entry: dict[str, Any] = {
            "address": address,
            "token": self.console_options.get("token") is not None,
        }
        if isinstance(address, tuple):
            entry["host"], entry["port"] = address[0], address[1]
        elif isinstance(address, str):
            entry["path"] = address
        return entry

    async def _app_state(self) -> dict[str, Any]:
        """What the ``state`` channel's subscribers return, by name (pyzenkit's ``get_state``).

        Each is called with no arguments, in the bus's order; an awaitable
        result is awaited. One that raises is logged and written as
        ``{"error": "Type: message"}``; the others still run. Two of the
        same name get ``#2``, ``#3``... after the first.
        """
        found: dict[str, Any] = {}
        for callback in self.bus.subscribers(self.STATE_CHANNEL):
            name = getattr(callback, "__qualname__", None) or repr(callback)
            key, n = name, 1
            while key in found:
                n += 1
                key = f"{name}#{n}"
            try:
                result = callback()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                logger.exception("%s: state subscriber %s raised", self.name, name)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            found[key] = result
        return found

    def inc(self, name: str, n: float = 1) -> None:
        """Count ``n`` more of the event ``name`` for the service (``manager.inc``).

        The count shows in the runlog (with its rates), the state dump, the
        statistics line and the console's ``stats``, under ``user``.

        Raises:
            InvalidArgument: ``name`` is not a non-empty string, or ``n`` is
                not a finite number.
        """
        self.manager.inc(name, n)

    async def _periodic_runlog(self) -> bool:
        try:
            path = await self.dump("runlog")
        except OSError as exc:
            logger.error("%s: could not write the periodic runlog: %s", self.name, exc)
        else:
            logger.debug("%s: runlog written to %s", self.name, path)
        return True

    def _log_statistics(self) -> bool:
        assert self._stats_line is not None  # made with the timer
        _, stats, seconds = self._stats_line()
        logger.info("%s: %s", self.name, statistics.format_statistics(stats, seconds))
        return True

    # -- servers ------------------------------------------------------------------------

    async def serve(
        self,
        protocol_factory: Any,
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        fd_name: str | None = None,
        **kwargs: Any,
    ) -> asyncio.Server:
        """Start a server whose every connection is a process of the manager.

        ``protocol_factory`` is one of:

        * a protocol factory (a :class:`Process` class, or any factory of
          asyncio protocols, which are adopted);
        * an aiohttp ``web.Application``, ``AppRunner`` or low-level
          ``web.Server``: served as aiohttp's ``run_app`` serves it (the
          runner set up here, ``on_shutdown`` and ``on_cleanup`` at STOP);
        * a ``uvicorn.Config``: its ASGI application served as uvicorn's
          server serves it (lifespan startup here, shutdown at STOP). With no
          ``host``, ``port`` or ``path``, the config's address is used.

        A graceful stop lets each connection finish what it is doing, the
        framework's own way (see :doc:`/serving`). Serving the same aiohttp
        application or uvicorn config again (a second address) shares its
        startup.

        Under systemd socket activation (``LISTEN_FDS``) the inherited socket
        named ``fd_name`` (or the next one) is used instead of binding, with
        the listen backlog it has. With ``path`` it is a Unix socket server.
        Other keyword arguments go to ``loop.create_server``.

        Raises:
            InvalidArgument: No address (no host, port, path or ``sock``), a
                port that is not an int from 0 to 65535 (a string of digits
                is taken); under socket activation, ``fd_name`` names no
                inherited socket left; or ``protocol_factory`` is none of the
                above: not callable, or a coroutine
                function or object with an async ``__call__`` (a handler or an
                ASGI application, not a factory: see :meth:`serve_streams`,
                :meth:`serve_websockets`, :meth:`serve_asgi`). The message
                lists what is accepted. A ``uvicorn.Config`` that sets
                ``workers`` above 1, ``reload``, ``limit_max_requests`` or
                ``callback_notify`` is refused too, naming the setting.
            FrameworkError: The ASGI application failed its lifespan startup.
        """
        serving = self._serving_of(protocol_factory)
        if serving is not None:
            factory = await serving.factory()
            config = serving.target if isinstance(serving, asgi.UvicornServing) else None
            if config is not None:
                if host is None and port is None and path is None:
                    host, port, path = config.host, config.port, config.uds
                kwargs.setdefault("backlog", config.backlog)
                if config.ssl is not None:
                    kwargs.setdefault("ssl", config.ssl)
        elif not callable(protocol_factory):
            raise InvalidArgument(
                f"{self!r} cannot serve {protocol_factory!r}: not a protocol factory nor a "
                f"framework object it knows. {_SERVABLE}"
            )
        elif inspect.iscoroutinefunction(protocol_factory) or (
            not isinstance(protocol_factory, type)
            and inspect.iscoroutinefunction(type(protocol_factory).__call__)
        ):
            raise InvalidArgument(
                f"{self!r} cannot serve {protocol_factory!r}: a coroutine function (or an "
                "object with an async __call__) is a handler or an ASGI application, not a "
                f"protocol factory. {_SERVABLE}"
            )
        else:
            factory = self.manager.register(protocol_factory)
        return await self._listen(factory, host, port, path, fd_name, kwargs)

    async def serve_asgi(
        self,
        asgi_app: Any,
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        fd_name: str | None = None,
        **config: Any,
    ) -> asyncio.Server:
        """Serve an ASGI application with uvicorn, every connection a process.

        The same as ``serve(uvicorn.Config(asgi_app, log_config=None,
        **config), host, port)``: ``config`` is what ``uvicorn.Config``
        takes (``http="h11"``, ``lifespan="on"``, ``timeout_keep_alive``...);
        uvicorn's logging configuration is left alone unless ``log_config``
        is given (the library configures no logging).

        Raises:
            FrameworkError: uvicorn is not installed, or the application
                failed its lifespan startup.
            InvalidArgument: ``config`` sets what belongs to uvicorn's own
                process management, which the App does not do: ``workers``
                above 1, ``reload``, ``limit_max_requests`` or
                ``callback_notify`` (see :doc:`/serving`).
        """
        try:
            import uvicorn
        except ImportError as exc:
            raise FrameworkError(
                f"{self!r}: serving an ASGI application needs uvicorn (pip install uvicorn)"
            ) from exc
        config.setdefault("log_config", None)
        settings = uvicorn.Config(asgi_app, **config)
        return await self.serve(settings, host, port, path=path, fd_name=fd_name)

    async def serve_streams(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        fd_name: str | None = None,
        limit: int = 2**16,
        **kwargs: Any,
    ) -> asyncio.Server:
        """Serve ``async def handler(reader, writer)`` as ``asyncio.start_server`` does.

        Each connection is a process whose work is its handler's task: it
        ends once the handler has returned and the connection is closed (the
        connection is closed when the handler returns). A graceful stop gives
        the reader end of file after the bytes already received, so a handler
        reading in a loop finishes the exchange in flight and returns; a kill
        cancels the handler and aborts the connection. Addresses and keyword
        arguments as :meth:`serve`.
        """
        factory = streams.stream_protocol_factory(handler, self.manager, limit=limit)
        return await self._listen(factory, host, port, path, fd_name, kwargs)

    async def serve_websockets(
        self,
        handler: Callable[..., Any],
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        fd_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Serve a ``websockets`` handler, every connection a process.

        ``handler(connection)`` and ``kwargs`` are what
        ``websockets.asyncio.server.serve`` takes; returns its ``Server``
        (``server.connections`` for broadcasting). A graceful stop closes
        each open WebSocket with code 1001 (going away) and waits for its
        handler to return; a kill cancels the handler and aborts the
        connection. Addresses as :meth:`serve`.

        Raises:
            FrameworkError: websockets is not installed.
            InvalidArgument: as :meth:`serve`, for ``fd_name``.
        """
        serving = frameworks.WebSocketServing(handler, self.manager)
        self._add_serving(serving)
        sock = self._listening_socket(fd_name, host, port, path, kwargs)
        if sock is not None:
            host = port = None
            kwargs["sock"] = sock
            kwargs.setdefault("backlog", _listen_backlog(sock))
            if sock.family == socket.AF_UNIX:
                kwargs["unix"] = True
        elif path is not None:
            kwargs.update(unix=True, path=path)
        server = await serving.listen(host, port, **kwargs)
        self.servers.append(server.server)
        logger.info("%s: serving WebSockets on %s", self.name, _addresses(server.server))
        return server

    def _serving_of(self, target: Any) -> frameworks.Serving | None:
        for known in self._servings:
            if known.target is target:
                return known
        serving = frameworks.serving_for(target, self.manager)
        if serving is not None:
            self._add_serving(serving)
        return serving

    def _add_serving(self, serving: frameworks.Serving) -> None:
        # Before its start: a framework whose startup began is stopped even if
        # the start or the bind fails (the bus walks STOP on a failed START).
        self._servings.append(serving)
        self.bus.subscribe(State.STOP, serving.stopping, priority=55)
        self.bus.subscribe(State.STOP, serving.stopped, priority=70)

    async def _listen(
        self,
        factory: Callable[[], Any],
        host: str | None,
        port: int | None,
        path: str | None,
        fd_name: str | None,
        kwargs: dict[str, Any],
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        given: object = port
        if isinstance(given, str) and given.isdigit():  # from the environment, as asyncio takes it
            port = int(given)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise InvalidArgument(
                f"{self!r} cannot serve on port {port!r}: a port is an int from 0 to 65535 "
                "(0 picks a free one)"
            )
        sock = self._listening_socket(fd_name, host, port, path, kwargs)
        if (
            sock is None
            and path is None
            and host is None
            and port is None
            and "sock" not in kwargs
        ):
            raise InvalidArgument(
                f"{self!r} cannot serve: give a host and a port (port 0 picks a free one), "
                "a path (a Unix socket) or sock="
            )
        if sock is not None:
            # asyncio listens again, with backlog=100 unless told otherwise.
            kwargs.setdefault("backlog", _listen_backlog(sock))
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

    def _listening_socket(
        self, fd_name: str | None, host: Any, port: Any, path: Any, kwargs: dict[str, Any]
    ) -> Any:
        """An inherited socket, or in a worker the master's for this address; None to bind."""
        sock = self._inherited_socket(fd_name)
        if sock is None and self.socket_broker is not None:
            sock = self.socket_broker(host, port, path, kwargs)
            for key in ("reuse_address", "reuse_port", "family", "flags"):
                kwargs.pop(key, None)  # the master bound it; asyncio refuses these with sock=
        return sock

    def _inherited_socket(self, fd_name: str | None) -> Any:
        """The next socket-activated socket (named ``fd_name``), or None to bind.

        Raises:
            InvalidArgument: Sockets were inherited but none named ``fd_name``
                is left: binding instead would leave systemd's socket unserved.
        """
        if self._inherited is None:
            self._inherited = systemd.listen_sockets()
        if not self._inherited:
            return None  # not socket-activated: bind as asked
        if fd_name is not None:
            socks = self._inherited.get(fd_name)
            if not socks:
                inherited = ", ".join(
                    f"{name!r} ({len(left)} left)" for name, left in self._inherited.items()
                )
                raise InvalidArgument(
                    f"app {self.name!r}: fd_name {fd_name!r} matches no inherited socket "
                    f"left; socket activation passed {inherited} (FileDescriptorName= "
                    "in the .socket unit names them)"
                )
            return socks.pop(0)
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
            if self.pidfile is not None:  # for archangel status (the port may be the kernel's)
                entry = self._console_entry()
                assert entry is not None
                sidecar.write_console(self.pidfile.path, entry)
        if self.web is not None:
            self.web.start()
            logger.info("%s: metrics and probes on %s", self.name, self.web.url)

    def master_console(self, master: Any) -> Any:
        """Start the console of ``master``, a master of this App's workers; return it.

        :meth:`run` with ``workers`` calls it when the App has a console: the
        master serves one console over every worker
        (:class:`~archangel.console.workers.MasterConsole`), with the App's
        console options, and each worker a console of its own on a private
        Unix socket (see :doc:`/workers`).

        Raises:
            ConsoleError: The console cannot listen, or a bad option.
        """
        from .console.workers import MasterConsole

        console = MasterConsole(master, **(self.console_options or {}))
        console.start()
        logger.info("%s: console on %s", self.name, console.address)
        if self.pidfile is not None:  # for archangel status, as _start writes it
            entry = self._console_entry(console)
            assert entry is not None
            sidecar.write_console(self.pidfile.path, entry)
        return console

    def master_web(self, master: Any) -> Any:
        """Start the web server of ``master``, a master of this App's workers; return it.

        :meth:`run` with ``workers`` calls it when the App has a web server:
        the master serves the metrics of every worker, the probes and a
        workers page (:class:`~archangel.web.fleet.FleetWebServer`) on the
        App's ``host`` and ``port``, and each worker its own web server on a
        private Unix socket (:meth:`web_on`; see :doc:`/workers`).

        Raises:
            WebError: The server cannot listen, or a bad option.
        """
        from .web.fleet import FleetWebServer

        server = FleetWebServer(master, **(self.web_options or {}))
        server.start()
        logger.info("%s: metrics and probes on %s", self.name, server.url)
        return server

    def web_on(self, path: str) -> Any:
        """A web server with this App's web options, on the Unix socket ``path`` instead.

        What a worker of ``run(workers=N)`` serves, for the master's web server alone:
        so it believes the client the master's proxy names (``X-Archangel-Peer``).
        """
        options = {k: v for k, v in (self.web_options or {}).items() if k not in ("host", "port")}
        server = _web_server(self, {**options, "path": path})
        server.guard.behind_master = True
        return server

    def _ready(self) -> None:
        systemd.ready(f"{self.name}: running, {len(self.servers)} servers")
        self._watchdog.start()
        if self.runlog_interval is not None:
            self._periodic.append(self.bus.every(self.runlog_interval, self._periodic_runlog))
        if self.stats_interval is not None:
            self._stats_line = statistics.Statistics(
                lambda: statistics.counters(self.manager), asyncio.get_running_loop().time
            )
            self._periodic.append(self.bus.every(self.stats_interval, self._log_statistics))
        if self.daemon is not None:
            self.daemon.ready()

    def _stop_accepting(self) -> None:
        for timer in self._periodic:
            timer.cancel()
        self._periodic.clear()
        systemd.stopping()
        for server in self.servers:
            server.close()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._deadline is None:  # a failed start's way down: no stop was asked for
            self._deadline = loop.time() + self.shutdown_timeout
        if self._quick:
            self.manager.killall()
        # What the STOP subscribers before this one left of the budget; the
        # manager kills, and cancels the hooks still pending, when it is spent.
        budget = max(0.0, self._deadline - loop.time())
        # shutdown() says False when it had to kill or cancel; a manager from before
        # it said anything returns None, taken as "not forced".
        shutdown: Callable[[float], Awaitable[bool | None]] = self.manager.shutdown
        if await shutdown(budget) is False:
            self._forced = True
        for server in self.servers:
            await server.wait_closed()

    async def _exit(self) -> None:
        self._watchdog.stop()
        if self.console is not None:
            self.console.close()
        if self.web is not None:
            self.web.close()
        if self.pidfile is not None:
            if self.console is not None:
                sidecar.remove_console(self.pidfile.path)
            self.pidfile.release()
        self.signals.uninstall()
        # Nothing the App started outlives it. A reload hook may wait on anything:
        # cancel it. A dump is a file write: let it finish.
        for task in self._reloads:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _supervisor_gave_up(self, supervisor: Process, error: BaseException) -> None:
        """A top-level supervisor gave up (the manager's ``give_up_handler``): stop the App.

        As OTP ends the application and mode exits with status 1: the App
        does not run on without those workers. It stops gracefully and exits
        with :data:`EXIT_FAILED`.
        """
        why = (
            f"supervisor {supervisor.name!r} (pid {supervisor.pid}) gave up: "
            f"{type(error).__name__}: {error}"
        )
        if self._gave_up is None:
            self._gave_up = why
        if self._stop is None:  # the App is not running: nothing to stop
            logger.error("%s: %s", self.name, why)
            return
        logger.error("%s: %s; stopping", self.name, why)
        self.request_stop()

    # -- signals ------------------------------------------------------------------------

    def handle_signal(self, sig: signal.Signals, action: Binding) -> None:
        """Carry out what one delivery of a signal does (the policy calls this on the loop).

        ``action`` is an :class:`~archangel.service.signals.Action`; a callable,
        called with ``sig`` (a coroutine it returns runs as a task, cancelled
        at EXIT if still running); or a bus channel's name, emitted on
        :attr:`bus` with ``sig``. What a callable or a subscriber raises is
        logged, never raised into the loop: a bad handler does not take the
        service down.
        """
        if isinstance(action, str):
            if not self.bus.has_subscribers(action):
                logger.warning(
                    "%s: %s is bound to channel %r, which has no subscribers",
                    self.name,
                    sig.name,
                    action,
                )
            self.bus.emit(action, sig)
        elif not isinstance(action, Action):
            self._call_signal_handler(sig, action)
        elif action is Action.GRACEFUL:
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

    def _call_signal_handler(self, sig: signal.Signals, handler: Callable[..., Any]) -> None:
        try:
            result = handler(sig)
        except Exception:
            logger.exception("%s: the %s handler %r failed", self.name, sig.name, handler)
            return
        if inspect.isawaitable(result):
            task = self._background(_awaited(result), f"{sig.name} handler")
            self._reloads.add(task)  # cancelled at EXIT, as a reload hook is

            def done(task: asyncio.Future[Any]) -> None:
                self._reloads.discard(task)
                if not task.cancelled() and (exc := task.exception()) is not None:
                    logger.error(
                        "%s: the %s handler %r failed", self.name, sig.name, handler, exc_info=exc
                    )

            task.add_done_callback(done)

    async def _dump_logged(self, which: str) -> None:
        try:
            path = await self.dump(which)
        except OSError as exc:
            logger.error("%s: could not write the %s dump: %s", self.name, which, exc)
        else:
            logger.info("%s: %s written to %s", self.name, which, path)

    def _background(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}: {name}")
        return hold(self._tasks, task)


def _web_options(name: str, web: Any) -> dict[str, Any]:
    """``web=``'s options, checked (``worker_timeout``, the master's under workers, included)."""
    # archangel.web raises WebError naming the extra when aiohttp or
    # prometheus_client is missing: an App(web=...) fails here, not at START.
    from .web import WebServer

    timeout = None
    if isinstance(web, Mapping) and "worker_timeout" in web:
        web = dict(web)
        timeout = web.pop("worker_timeout")
    options = _options(name, "web", web, WebServer) or {}
    if timeout is not None:
        options["worker_timeout"] = timeout
    return options


def _web_server(app: App, options: Mapping[str, Any]) -> Any:
    """The App's :class:`archangel.web.WebServer` (made, not started)."""
    from .web import WebServer

    # worker_timeout is the master's, under workers (archangel.web.fleet): not one process's.
    return WebServer(app, **{k: v for k, v in options.items() if k != "worker_timeout"})


def _options(name: str, what: str, value: Any, target: type) -> dict[str, Any] | None:
    """``console=`` or ``web=``: True (the defaults), False or None (none), or
    a mapping of ``target``'s keyword arguments (checked now, not at START).

    Raises:
        InvalidArgument: Another value (a token given alone, say), or a key
            ``target`` does not take.
    """
    if value is None or value is False:
        return None
    if value is True:
        return {}
    accepted = [p for p in inspect.signature(target).parameters if p not in ("self", "target")]
    if not isinstance(value, Mapping):
        raise InvalidArgument(
            f"App {name!r}: {what} must be True, False or a mapping of options such as "
            f"{{'port': {8023 if what == 'console' else 9100}, 'token': '...'}}, not {value!r}"
        )
    unknown = [key for key in value if key not in accepted]
    if unknown:
        raise InvalidArgument(
            f"App {name!r}: {what} has no option {unknown[0]!r}; "
            f"the options are {', '.join(accepted)}"
        )
    return dict(value)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _binding_text(binding: Binding) -> str:
    """A signal's binding as the state's settings show it: an action, a channel, a callback."""
    if isinstance(binding, Action):
        return binding.value
    if isinstance(binding, str):
        return f"channel {binding!r}"
    return getattr(binding, "__qualname__", None) or repr(binding)


def _interval(name: str, what: str, value: Any) -> float | None:
    """A periodic interval: None (off) or a positive, finite number of seconds."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise InvalidArgument(
            f"App {name!r}: {what} must be a positive number of seconds or None, not {value!r}"
        )
    return float(value)


def _addresses(server: asyncio.Server) -> list[Any]:
    return [sock.getsockname() for sock in server.sockets]


#: ``tcp_info.tcpi_sacked``: for a listening TCP socket, Linux reports its
#: backlog there (``sk_max_ack_backlog``, what ``ss -ltn`` shows as Send-Q).
#: What ``App.serve`` accepts, for its refusals.
_SERVABLE = (
    "serve() takes a protocol factory (a Process subclass, an asyncio.Protocol class, any "
    "callable returning a protocol) or a framework object: an aiohttp web.Application, "
    "web.AppRunner or low-level web_server.Server, or a uvicorn.Config; serve_asgi() serves "
    "an ASGI application, serve_streams() an asyncio streams handler (reader, writer), "
    "serve_websockets() a websockets handler"
)

_TCP_INFO_BACKLOG = struct.Struct("=8x6I")
_TCP_LISTEN = 10


def _listen_backlog(sock: socket.socket) -> int:
    """The listen backlog of an inherited socket, to listen with again.

    What the socket has, where Linux tells (TCP); otherwise ``SOMAXCONN``,
    systemd's default for ``Backlog=``.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_INFO"):
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except OSError:
            return socket.SOMAXCONN
        if len(info) >= _TCP_INFO_BACKLOG.size and info[0] == _TCP_LISTEN:
            backlog: int = _TCP_INFO_BACKLOG.unpack_from(info)[5]
            if backlog > 0:
                return backlog
    return socket.SOMAXCONN


def _first_cause(exc: BaseException) -> str:
    """The innermost message of a (nested) exception group, for a one-line report."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    with contextlib.suppress(Exception):
        return str(exc) or type(exc).__name__
    return type(exc).__name__


def _causes(exc: BaseException) -> str:
    """Every innermost message of a (nested) exception group, for a start failure's last line."""
    if not isinstance(exc, BaseExceptionGroup) or not exc.exceptions:
        return _first_cause(exc)
    return "; ".join(dict.fromkeys(_causes(inner) for inner in exc.exceptions))
