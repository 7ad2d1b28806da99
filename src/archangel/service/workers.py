"""Prefork workers: a master process that forks N workers and keeps them running.

``App.run(workers=N)`` hands the App to a :class:`Master`. The master runs
no event loop and none of the App's lifecycle: it is a small synchronous
loop (gunicorn's arbiter, on the same plan) that forks the workers, reaps
them, respawns them, binds their listening sockets and turns signals into
actions. Each worker is a forked copy of the process that runs the App's
whole lifecycle with ``app.run()``.

Sockets: a worker's ``app.serve(...)`` asks the master for the socket over a
private socket pair (the *broker*); the master binds it once, keeps it, and
passes every worker a duplicate of the same descriptor (``SCM_RIGHTS``), which
the worker serves as it serves a socket-activated one. Every worker accepts
from one queue, and the queue outlives every worker: a worker rolled or
killed takes no connection with it. Under socket activation the workers take
the inherited descriptors themselves (``$LISTEN_PID`` rewritten to theirs).

A worker tells the master it is ready, over a pipe, when its App reaches RUN.
Workers die with the master (``PR_SET_PDEATHSIG``, checked against the race
with ``getppid``) and never talk to systemd: the master does.

When the App has a console, the master runs one over every worker
(:class:`archangel.console.workers.MasterConsole`, made by the App), and each
worker a console of its own on a Unix socket in the master's private runtime
directory (:mod:`~archangel.service.worker_views`); so with ``App(web=...)``:
the master serves the web endpoints over every worker
(:class:`archangel.web.fleet.FleetWebServer`), each worker its own on a Unix
socket there. SIGURG re-executes the
master with the listening sockets (:mod:`~archangel.service.upgrade`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..bus.states import State
from ..errors import InvalidArgument
from . import broker, sidecar, systemd, upgrade, worker_views
from .worker_views import per_worker_path, uptime, worker_pids

__all__ = ["Master", "Worker", "per_worker_path", "resolve_count", "uptime", "worker_pids"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: Signals the master handles itself; every other keeps its default action.
_HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGURG,
    signal.SIGCHLD,
)


def resolve_count(workers: int | str) -> int:
    """How many workers ``workers`` asks for: a count >= 1, or ``"auto"`` (the usable cores).

    Raises:
        InvalidArgument: Neither a positive count nor ``"auto"``.
    """
    if workers == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgument(f"workers must be a count >= 1 or 'auto', not {workers!r}")
    return workers


@dataclass
class Worker:
    """One forked worker, as the master sees it."""

    slot: int
    """Which of the N places it fills (1..N); a successor takes its predecessor's."""
    pid: int
    started: float
    """``time.monotonic()`` at the fork."""
    ready_fd: int
    """The read end of its readiness pipe (-1 once closed)."""
    broker: socket.socket
    """The master's end of its socket broker."""
    ready: bool = False
    """Its App reached RUN."""
    retiring: bool = False
    """Whether the master asked it to stop (then its end is no failure)."""
    asked: dict[tuple[Any, ...], int] = field(default_factory=dict)
    """How many sockets it took per address, to hand the n-th request the n-th socket."""


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Master:
    """The master of ``count`` forked workers that each run ``app``.

    Args:
        app: The App (an ``archangel.App``) each worker runs.
        count: How many workers (see :func:`resolve_count`).
        loop: The event loop each worker runs (``"uvloop"`` or ``"asyncio"``).
        max_restarts: A worker place may fail (end without being asked to)
            this many times within ``max_seconds``; one more and the master
            gives up: it stops every worker and exits with status 1.
        max_seconds: The window of ``max_restarts``.
        backoff: The first failure is replaced at once; each further one in
            the window waits twice as long as the last, from ``backoff``
            seconds up to ``max_backoff``.
        max_backoff: The longest wait before a respawn.
        factory: Called in each worker, after the fork, for the App it runs
            instead of ``app`` (the command line passes one that imports
            ``MODULE:APP`` afresh, so a roll picks up changed code); ``app``
            still gives the master its name, timeout, pidfile and daemon.
    """

    def __init__(
        self,
        app: Any,
        count: int | str,
        *,
        loop: str = "uvloop",
        max_restarts: int = 5,
        max_seconds: float = 10.0,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        self.app = app
        self.count = resolve_count(count)
        self.loop = loop
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.factory = factory
        self.pid = os.getpid()
        self.workers: dict[int, Worker] = {}
        self.slots: dict[int, int | None] = {}  # slot -> the pid serving it (None: respawn due)
        self._respawn_at: dict[int, float] = {}
        self._failures: dict[int, deque[float]] = {}
        self._successors: dict[int, int] = {}  # slot -> the fresh worker replacing it
        self._roll: deque[int] = deque()
        self._roll_again = False
        self._roll_not_before = 0.0
        self._broker = broker.Broker(app.name)
        self._signals: deque[int] = deque()
        self._wakeup: tuple[int, int] | None = None
        self._stopping: str | None = None  # "graceful" or "quick"
        self._stop_deadline: float | None = None
        self._killed = False
        self._failed: str | None = None
        self._worst = 0  # the worst exit status of a worker stopped on the way out
        self._announced = False
        self._watchdog_every = systemd.watchdog_interval()
        self._watchdog_next = 0.0
        self.restarts: dict[int, int] = {}  # slot -> workers respawned after a failure
        #: The master's console over every worker (the App has a console), or None.
        self.console: Any = None
        #: The private directory of the workers' consoles (mode 0700), or None.
        self.runtime_dir: str | None = None
        #: The master's web server over every worker (the App has one), or None.
        self.web: Any = None
        #: ``time.monotonic()`` at the last turn of the master's loop (``/livez``).
        self.heartbeat = time.monotonic()
        self._successor: int | None = None  # the new master forked for an upgrade
        self._predecessor: int | None = None  # the old master this one upgrades

    def __repr__(self) -> str:
        workers = f"{len(self.workers)}/{self.count}"
        return f"<Master {self.app.name!r} pid={self.pid} workers={workers}>"

    # -- running ------------------------------------------------------------------

    def run(self) -> int:
        """Fork the workers and supervise them until stopped; returns the exit status.

        0 after a clean stop; 1 when the master gave up on a worker that
        kept failing (or could not hold its pidfile); 3 when a worker had to
        be killed at the shutdown deadline (or itself reported a forced stop).
        """
        pidfile = self.app.pidfile
        handed = upgrade.inherited()
        if handed is not None:  # the pidfile and the console are the old master's for now
            self._predecessor, sockets = handed
            self._broker.adopt(sockets)
            logger.info("%s: new master, upgrading %d", self.name, self._predecessor)
        elif pidfile is not None:
            pidfile.acquire()
        self._install()
        try:
            try:
                if self.app.console_options is not None or self.app.web is not None:
                    self._start_console(console=handed is None)
            except Exception as exc:  # the console cannot listen: nothing is forked
                self._failed = f"cannot start: {exc}"
            else:
                for slot in range(1, self.count + 1):
                    self._spawn(slot)
                while not (self._stopping and not self.workers):
                    self._step()
        finally:
            self._uninstall()
            self._broker.close(unlink=self._successor is None)  # else the new master's now
            for operator in (self.console, self.web):
                if operator is not None:
                    operator.close()
            if self.runtime_dir is not None:
                worker_views.remove_runtime_dir(self.runtime_dir)
            if pidfile is not None:
                sidecar.remove_console(pidfile.path)  # if the master console wrote it
                pidfile.release()
        if self._failed is not None:
            logger.error("%s: master exiting with status 1: %s", self.app.name, self._failed)
            return 1
        if self._killed:
            return 3
        logger.info("%s: master stopped, every worker ended", self.app.name)
        return self._worst

    def _start_console(self, console: bool = True) -> None:
        app = self.app
        if self.runtime_dir is None:
            self.runtime_dir = worker_views.make_runtime_dir(app.name, app.user, app.group)
        if console and app.console_options is not None:
            self.console = app.master_console(self)
        if console and app.web is not None:
            self.web = app.master_web(self)

    @property
    def name(self) -> str:
        """The App's name."""
        return str(self.app.name)

    @property
    def stopping(self) -> bool:
        """Whether a stop has begun (TERM, INT, QUIT, or the master gave up)."""
        return self._stopping is not None

    def worker_table(self) -> list[dict[str, Any]]:
        """The workers now, by place (safe to call from another thread).

        See :func:`~archangel.service.worker_views.worker_table`.
        """
        return worker_views.worker_table(self)

    def _install(self) -> None:
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (read, write)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in _HANDLED:
            signal.signal(sig, self._on_signal)

    def _uninstall(self) -> None:
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)  # handled in _step, out of the signal context

    def _step(self) -> None:
        """One turn of the loop: wait for an event (at most 1 s), then handle them all."""
        assert self._wakeup is not None
        now = self.heartbeat = time.monotonic()
        due = [*self._respawn_at.values()]
        if self._stop_deadline is not None:
            due.append(self._stop_deadline)
        if self._watchdog_every is not None:
            due.append(self._watchdog_next)
        if self._roll:
            due.append(self._roll_not_before)
        if self._predecessor is not None and self._announced:  # watch for its end
            due.append(now + 0.05)
        timeout = max(0.0, min([now + 1.0, *due]) - now)
        fds: list[Any] = [self._wakeup[0]]
        for worker in self.workers.values():
            if worker.ready_fd >= 0:
                fds.append(worker.ready_fd)
            fds.append(worker.broker)
        if not self._signals:
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(fds, [], [], timeout)
                for item in readable:
                    self._readable(item)
        while self._signals:
            self._handle_signal(self._signals.popleft())
        self._reap()
        self._manage()

    def _readable(self, item: Any) -> None:
        assert self._wakeup is not None
        if item == self._wakeup[0]:
            with contextlib.suppress(OSError):
                while os.read(item, 256):
                    pass
            return
        for worker in list(self.workers.values()):
            if item is worker.broker:
                self._broker.answer(worker.broker, worker.asked)
            elif item == worker.ready_fd:
                try:
                    data = os.read(item, 16)
                except OSError:
                    data = b""
                if data:
                    self._became_ready(worker)
                else:
                    os.close(worker.ready_fd)
                    worker.ready_fd = -1

    # -- signals ------------------------------------------------------------------

    def _handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # _step reaps after every turn
        name = signal.Signals(signum).name
        logger.info("%s: master got %s", self.app.name, name)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop("graceful")
        elif signum == signal.SIGQUIT:
            self.stop("quick")
        elif signum == signal.SIGHUP:
            self.roll()
        elif signum == signal.SIGTTIN:
            self.resize(self.count + 1)
        elif signum == signal.SIGTTOU:
            self.resize(self.count - 1)
        elif signum == signal.SIGURG:
            self.upgrade()
        elif signum in (signal.SIGUSR1, signal.SIGUSR2):
            worker_views.dump(self, "runlog" if signum == signal.SIGUSR1 else "state")
            for pid, worker in self.workers.items():
                if worker.ready:  # a worker still starting has no handler for it yet
                    self._kill(pid, signum)

    def upgrade(self) -> None:
        """Execute a new master with the listening sockets (see :mod:`~archangel.service.upgrade`).

        The new master forks its workers and, once they are all ready, stops
        this master with SIGTERM. If it ends before, this master runs on.
        """
        if self._stopping or self._successor is not None or self._predecessor is not None:
            why = "stopping" if self._stopping else "an upgrade is under way"
            logger.warning("%s: not upgrading: %s", self.name, why)
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - it executes the new master
            upgrade.exec_new_master(self._broker.sockets)
        self._successor = pid
        logger.info("%s: upgrading: new master %d started", self.name, pid)

    def stop(self, how: str = "graceful") -> None:
        """Stop every worker: ``"graceful"`` (SIGTERM) or ``"quick"`` (SIGQUIT).

        A worker still running ``shutdown_timeout`` (plus a grace second)
        later is killed. A second stop sends its signal again; the deadline stays.
        """
        if self._stopping is None:
            if self._successor is None:  # else the service goes on, in the new master
                systemd.stopping(f"{self.app.name}: stopping {len(self.workers)} workers")
            self._stop_deadline = time.monotonic() + self.app.shutdown_timeout + 2.0
            self._respawn_at.clear()
            self._roll.clear()
        self._stopping = how
        sig = signal.SIGTERM if how == "graceful" else signal.SIGQUIT
        for pid, worker in self.workers.items():
            worker.retiring = True
            self._kill(pid, sig)

    def roll(self) -> None:
        """Replace every worker, one at a time: a fresh one ready before an old one stops."""
        if self._stopping:
            return
        if self._roll or self._successors:
            self._roll_again = True
            return
        systemd.reloading(f"{self.app.name}: rolling {len(self.slots)} workers")
        self._roll.extend(sorted(self.slots))
        logger.info("%s: rolling workers %s", self.app.name, list(self._roll))

    def resize(self, count: int) -> None:
        """Run ``count`` workers (at least 1): spawn the new places, stop the highest ones."""
        if self._stopping or count < 1:
            return
        self.count = count
        logger.info("%s: now %d workers", self.app.name, count)

    # -- workers --------------------------------------------------------------------

    def _manage(self) -> None:
        if self._stopping:
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                for pid in self.workers:
                    logger.error(
                        "%s: worker %d still running at the shutdown deadline: killed",
                        self.app.name,
                        pid,
                    )
                    self._kill(pid, signal.SIGKILL)
                    self._killed = True
                self._stop_deadline = None
            return
        now = time.monotonic()
        if self._predecessor is not None and self._announced and os.getppid() != self._predecessor:
            old, self._predecessor = self._predecessor, None
            upgrade.take_over(self, old)
        if self._watchdog_every is not None and now >= self._watchdog_next:
            systemd.watchdog_ping()
            self._watchdog_next = now + self._watchdog_every
        for slot in [s for s in self.slots if s > self.count]:  # TTOU: the highest go
            current = self.slots.pop(slot)
            self._respawn_at.pop(slot, None)
            for gone in (current, self._successors.pop(slot, None)):
                if gone is not None and gone in self.workers:
                    self.workers[gone].retiring = True
                    self._kill(gone, signal.SIGTERM)
        for slot in range(1, self.count + 1):
            if slot not in self.slots:
                self._spawn(slot)
        for slot, at in list(self._respawn_at.items()):
            if now >= at:
                del self._respawn_at[slot]
                self._spawn(slot)
        if self._roll and not self._successors and now >= self._roll_not_before:
            slot = self._roll[0]
            if slot not in self.slots:
                self._roll.popleft()
            elif self.slots[slot] is not None:
                self._roll.popleft()
                self._successors[slot] = self._fork(slot)
        if not self._roll and not self._successors and self._roll_again:
            self._roll_again = False
            self.roll()

    def _spawn(self, slot: int) -> None:
        self.slots[slot] = self._fork(slot)

    def _became_ready(self, worker: Worker) -> None:
        worker.ready = True
        logger.info("%s: worker %d (place %d) ready", self.app.name, worker.pid, worker.slot)
        if self._successors.get(worker.slot) == worker.pid:
            del self._successors[worker.slot]
            old = self.slots.get(worker.slot)
            self.slots[worker.slot] = worker.pid
            if old is not None and old in self.workers:
                self.workers[old].retiring = True
                self._kill(old, signal.SIGTERM)
            if not self._roll and not self._roll_again:
                logger.info("%s: roll done", self.app.name)
                systemd.ready(self._status())
        if not self._announced and all(
            pid is not None and pid in self.workers and self.workers[pid].ready
            for pid in (self.slots.get(s) for s in range(1, self.count + 1))
        ):
            self._announced = True
            if self._predecessor is not None:  # the service is this master's from now on
                systemd.notify(f"MAINPID={self.pid}")
                self._kill(self._predecessor, signal.SIGTERM)
            systemd.ready(self._status())
            if self.app.daemon is not None:
                self.app.daemon.ready()

    def _status(self) -> str:
        return f"{self.app.name}: running, {self.count} workers"

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._successor:
                self._successor = None
                logger.error(
                    "%s: upgrade failed: the new master %d %s; running on",
                    self.name,
                    pid,
                    _describe(status),
                )
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._close(worker)
            how = _describe(status)
            code = os.waitstatus_to_exitcode(status)
            if worker.retiring:
                logger.info("%s: worker %d %s", self.app.name, pid, how)
                if self._stopping and code != 0:
                    self._worst = max(self._worst, code if code > 0 else 3)
                continue
            self._failed_worker(worker, how)

    def _failed_worker(self, worker: Worker, how: str) -> None:
        slot = worker.slot
        when = "before it was ready" if not worker.ready else "unasked"
        successor = False
        if self._successors.get(slot) == worker.pid:
            del self._successors[slot]
            successor = self.slots.get(slot) is not None
        elif self.slots.get(slot) == worker.pid:
            self.slots[slot] = None
        else:
            return
        now = time.monotonic()
        failures = self._failures.setdefault(slot, deque())
        failures.append(now)
        while failures and failures[0] < now - self.max_seconds:
            failures.popleft()
        message = f"worker {worker.pid} (place {slot}) {how} {when}"
        self.restarts[slot] = self.restarts.get(slot, 0) + 1
        if len(failures) > self.max_restarts:
            self._failed = (
                f"{message}; {len(failures)} failures within {self.max_seconds:g} s: giving up"
            )
            logger.error("%s: %s", self.app.name, self._failed)
            self.stop("graceful")
            return
        delay = 0.0
        if len(failures) > 1:
            delay = min(self.max_backoff, self.backoff * 2 ** (len(failures) - 2))
        logger.error("%s: %s; respawning in %g s", self.app.name, message, delay)
        if successor:  # the old worker still serves: roll this place again, later
            self._roll.appendleft(slot)
            self._roll_not_before = now + delay
        elif slot not in self._successors:  # else the successor will take the place
            self._respawn_at[slot] = now + delay

    def _kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _close(self, worker: Worker) -> None:
        if worker.ready_fd >= 0:
            os.close(worker.ready_fd)
            worker.ready_fd = -1
        worker.broker.close()

    def _fork(self, slot: int) -> int:
        for stream in (sys.stdout, sys.stderr):  # or the worker writes it out again
            with contextlib.suppress(Exception):
                stream.flush()
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns (measured in the worker)
            try:
                os.close(ready_r)
                ours.close()
                self._child(ready_w, theirs)
            finally:
                os._exit(1)
        os.close(ready_w)
        theirs.close()
        self.workers[pid] = Worker(slot, pid, time.monotonic(), ready_r, ours)
        logger.info("%s: worker %d (place %d) started", self.app.name, pid, slot)
        return pid

    # -- the worker's side --------------------------------------------------------

    def _child(self, ready_w: int, channel: socket.socket) -> None:  # pragma: no cover
        """Become a worker: never orphaned, quiet towards systemd, then run the App."""
        status = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.pid:  # the master died before prctl: too late to be told
                os._exit(1)
            # Its own process group: a terminal's ^C or hangup reaches the master
            # alone, which tells every worker once (and HUP means a roll, not a reload).
            os.setpgid(0, 0)
            self._uninstall_inherited()
            for worker in self.workers.values():
                with contextlib.suppress(OSError):
                    if worker.ready_fd >= 0:
                        os.close(worker.ready_fd)
                worker.broker.close()
            self._broker.close(unlink=False)
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)
            systemd.claim_listen_fds(self.pid)
            app = self.app if self.factory is None else self.factory()
            me = os.getpid()
            app.pidfile = None
            app.daemon = None
            app.console_options = worker_views.worker_console(self, app.console_options, me)
            worker_views.worker_web(self, app, me)
            app.state_file = per_worker_path(app.state_file, me)
            app.runlog_file = per_worker_path(app.runlog_file, me)
            app.socket_broker = broker.Client(channel, app.name)

            def ready() -> None:
                with contextlib.suppress(OSError):
                    os.write(ready_w, b"R")
                    os.close(ready_w)

            app.bus.subscribe(State.RUN, ready, priority=20)
            status = int(app.run(loop=self.loop))
        except BaseException:
            logger.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _uninstall_inherited(self) -> None:  # pragma: no cover - in the worker
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None
        self._signals.clear()
