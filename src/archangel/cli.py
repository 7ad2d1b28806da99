"""The ``archangel`` command (also ``python -m archangel``).

Sub-commands parse arguments and call into the library; they own no logic
beyond turning errors into one-line messages and exit statuses.

``run`` exits with the App's status (0 a clean stop, 1 it failed or could
not start, 3 the stop was forced at ``shutdown_timeout``), or 2 for bad usage
(a ``--umask`` that is not octal, say) or a ``MODULE:APP`` that cannot be
loaded, or 6 for a pidfile that cannot be used (a directory, a FIFO, a
missing directory), found before anything starts. ``signal`` and ``status``:

======  ==============================================================
status  meaning
======  ==============================================================
0       done / the service runs (``status``: even as another user)
1       a pidfile names a process that is gone (stale)
2       bad usage (argparse: an unknown signal name, say)
3       the pidfile does not exist (not running)
4       the pidfile is malformed
5       permission denied (reading the pidfile, or ``signal`` to another user's process)
6       another operating-system error (the pidfile is not a regular file, say)
======  =============================================================="""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import demo
from .errors import DaemonError, InvalidArgument, PidFileUnusable
from .kernel.signames import MASTER_SIGNALS, SIGNALS, signal_key
from .service import daemon, sidecar, upgrade, workers

__all__ = ["EXIT_STATUS", "load_app", "main"]

#: Exit status per :class:`~archangel.errors.PidFileUnusable` reason.
EXIT_STATUS = {"stale": 1, "missing": 3, "malformed": 4, "permission": 5, "io": 6, "held": 1}


#: What ``archangel signal`` sends: an App's signals, and a master's TTIN/TTOU.
_SIGNALS = {**SIGNALS, **MASTER_SIGNALS}
_SIGNAL_NAMES = ", ".join(name.upper() for name in _SIGNALS if name != "check") + " or check"


def signal_name(text: str) -> str:
    """A signal name as the operator types it (``TERM``, ``SIGTERM``, ``term``): its key.

    Raises:
        argparse.ArgumentTypeError: Not a signal the command knows; the message lists them.
    """
    name = signal_key(text, _SIGNALS)
    if name is None:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}: use {_SIGNAL_NAMES}")
    return name


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """``--log-level``: a level name, any case.

    Raises:
        argparse.ArgumentTypeError: Not one of :data:`_LEVELS`.
    """
    name = text.strip().upper()
    if name not in _LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown level {text!r}: use {', '.join(_LEVELS[:-1])} or {_LEVELS[-1]}"
        )
    return name


def umask_value(text: str) -> int:
    """``--umask``: octal digits (``022``, ``0o022``) up to ``777``.

    Raises:
        argparse.ArgumentTypeError: Not octal, or out of range.
    """
    digits = text.strip().lower().removeprefix("0o")
    if not digits or not all(c in "01234567" for c in digits) or int(digits, 8) > 0o777:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a umask: give octal digits 000-777, e.g. 022"
        )
    return int(digits, 8)


def pidfile_path(text: str) -> str:
    """``--pidfile``: a path, not empty (an empty one names no file).

    Raises:
        argparse.ArgumentTypeError: The path is empty or blank.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty: give a file, e.g. /run/app.pid")
    return text


_LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """A command-line mistake reported as status 2."""


class RunError(Exception):
    """``run`` cannot set up the process it was asked for (status 1, as a daemon's)."""


_DEMO_DESCRIPTION = """\
The demo service: an echo server, a tailing pipeline and the management
console, on 127.0.0.1. Every echo connection is a process and appends each
line it echoes to a log file; a pipeline tails that log, parses it and counts
the lines per peer; the process table is printed every few seconds. Ctrl-C
stops it all gracefully."""

_DEMO_EPILOG = """\
then, in other terminals:
  printf 'hello\\n' | nc -q1 127.0.0.1 8888   a connection comes and goes
  archangel console 127.0.0.1:8023           ps, info 1, kill 1, pipes, help"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archangel",
        description="An asyncio process manager: run, inspect and signal services.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run the demo service on 127.0.0.1",
        description=_DEMO_DESCRIPTION,
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--port", type=int, default=8888, metavar="PORT", help="echo port (default 8888; 0: any)"
    )
    p.add_argument(
        "--console-port",
        type=int,
        default=8023,
        metavar="PORT",
        help="console port (default 8023; 0: any)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between two printouts of the process table (default 5)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default uvloop)",
    )

    p = sub.add_parser(
        "run",
        help="run a service: MODULE:APP names an archangel.App",
        description="Run the App named MODULE:APP (an App, or a callable returning one).",
    )
    p.add_argument("target", metavar="MODULE:APP")
    p.add_argument("--daemon", action="store_true", help="detach; return once it runs")
    p.add_argument("--pidfile", type=pidfile_path, help="hold this pidfile while running")
    p.add_argument("--user", help="drop to this user after binding")
    p.add_argument("--group", help="drop to this group after binding")
    p.add_argument(
        "--umask",
        type=umask_value,
        default=None,
        metavar="OCTAL",
        help="file mode creation mask, octal 000-777 (e.g. 022)",
    )
    p.add_argument("--workdir", default=None, help="directory to run in (daemon: default /)")
    p.add_argument("--log-file", default=None, help="append logs (and a daemon's stdio) here")
    p.add_argument(
        "--log-level",
        type=log_level,
        default="INFO",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL, any case (default INFO)",
    )
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument(
        "--workers",
        default=None,
        metavar="N|auto",
        help="fork N workers (auto: one per usable core) under a master; default 1",
    )

    p = sub.add_parser(
        "signal",
        help="signal the service a pidfile names",
        description="Send a signal to the running service (check: only test that it runs).",
    )
    p.add_argument("--pidfile", type=pidfile_path, required=True)
    p.add_argument(
        "signal",
        type=signal_name,
        metavar="SIGNAL",
        help=f"{_SIGNAL_NAMES} (TTIN/TTOU: a master of workers only); any case, "
        "with or without SIG (TERM, SIGTERM, term)",
    )

    p = sub.add_parser(
        "status",
        help="say whether the service a pidfile names runs",
        description="Say whether the service a pidfile names runs (exit status 0), or why "
        "not: 1 stale, 3 no pidfile, 4 malformed, 5 permission denied.",
    )
    p.add_argument("--pidfile", type=pidfile_path, required=True)

    p = sub.add_parser(
        "console",
        help="talk to a service's management console",
        description="Talk to an archangel console (the token may also come from "
        "$ARCHANGEL_CONSOLE_TOKEN).",
    )
    p.add_argument("address", help="HOST:PORT, PORT (on 127.0.0.1) or unix:PATH")
    p.add_argument("--token", help="the console's token")
    p.add_argument(
        "-c",
        "--command",
        action="append",
        dest="commands",
        metavar="COMMAND",
        help="run COMMAND, print only its answer (no banner or prompt) and leave; "
        "may be repeated. Commands on a stdin that is not a terminal run the same way. "
        "Exit status 1 if an answer is an error",
    )
    return parser


def load_app(target: str) -> Any:
    """Import ``MODULE:APP`` and return the App (calling APP if it is a factory).

    Raises:
        UsageError: The target is malformed, or the module or name is missing.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{target!r} is not MODULE:APP (e.g. examples.service:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no {attr!r}") from None
    from .app import App

    if not isinstance(obj, App) and callable(obj):
        obj = obj()
    if not isinstance(obj, App):
        raise UsageError(f"{target} is {obj!r}, not an archangel.App")
    return obj


def _run(args: argparse.Namespace) -> int:
    count = None
    if args.workers is not None:
        try:
            count = workers.resolve_count(args.workers)
        except InvalidArgument as exc:
            raise UsageError(f"--workers: {exc}") from None
    app = load_app(args.target)
    # Paths are taken before a daemon changes directory.
    log_file = os.path.abspath(args.log_file) if args.log_file else None
    # A new master executed by an old one (SIGURG): its pidfile and daemon are the old one's.
    upgrading = upgrade.OLD_ENV in os.environ
    if args.pidfile is not None and upgrading:
        app.pidfile = daemon.PidFile(os.path.abspath(args.pidfile))
    elif args.pidfile is not None:
        pidfile = os.path.abspath(args.pidfile)
        try:
            pid = daemon.check(pidfile, signalable=False)
        except PidFileUnusable as exc:
            # Acquiring replaces a stale or malformed file with a warning in the
            # log, unless a live process holds its lock: that is refused there.
            if exc.reason not in ("missing", "stale", "malformed"):
                raise
        else:
            held = f"pidfile {pidfile} is held by running process {pid}"
            print(f"archangel run: {app.name} could not start: {held}", file=sys.stderr)
            return 1
        directory = os.path.dirname(pidfile)
        if not os.path.isdir(directory):  # as a directory or a FIFO: refused before starting
            raise PidFileUnusable(
                f"cannot create pidfile {pidfile}: directory {directory} does not exist",
                reason="io",
                path=pidfile,
            )
        app.pidfile = daemon.PidFile(pidfile)
    if args.user is not None:
        app.user = args.user
    if args.group is not None:
        app.group = args.group
    if args.daemon and not upgrading:
        app.daemon = daemon.daemonize(
            workdir=args.workdir or "/",
            umask=0o022 if args.umask is None else args.umask,
            stdout=log_file,
            stderr=log_file,
        )
    else:
        if args.umask is not None:
            os.umask(args.umask)
        if args.workdir:
            try:
                os.chdir(args.workdir)
            except OSError as exc:  # as the daemon says it (DaemonError: status 1)
                raise RunError(
                    f"cannot change directory to {args.workdir}: {exc.strerror}"
                ) from None
        if log_file is not None:
            try:
                open(log_file, "a").close()
            except OSError as exc:
                raise RunError(f"cannot open log file {log_file}: {exc.strerror}") from None
    logging.basicConfig(level=args.log_level, format=_LOG_FORMAT, filename=log_file)
    try:
        if count is not None and count > 1:
            # Each worker imports MODULE:APP afresh: a roll (HUP) serves changed code.
            master = workers.Master(app, count, loop=args.loop, factory=lambda: _fresh(args))
            return master.run()
        return int(app.run(loop=args.loop))
    except BaseException as exc:
        if app.daemon is not None:
            app.daemon.fail(f"{type(exc).__name__}: {exc}")
        raise


def _fresh(args: argparse.Namespace) -> Any:
    """In a worker: the App of ``args.target`` imported anew, with the command line's user."""
    sys.modules.pop(args.target.partition(":")[0], None)
    importlib.invalidate_caches()
    app = load_app(args.target)
    if args.user is not None:
        app.user = args.user
    if args.group is not None:
        app.group = args.group
    return app


def _signal(args: argparse.Namespace) -> int:
    signum = _SIGNALS[args.signal]
    if args.signal in MASTER_SIGNALS:
        pid = daemon.check(args.pidfile)
        if not workers.worker_pids(pid):
            what = "upgrades a master" if args.signal == "urg" else "changes the count"
            raise UsageError(
                f"SIG{args.signal.upper()} {what} of workers, and pid {pid} "
                f"({args.pidfile}) runs none: it would do nothing or stop it"
            )
    pid = daemon.send_signal(args.pidfile, signum)
    if signum:
        print(f"sent SIG{args.signal.upper()} to pid {pid}")
    else:
        print(f"running: pid {pid}")
    return 0


def _status(args: argparse.Namespace) -> int:
    pid = daemon.check(args.pidfile, signalable=False)
    print(f"running: pid {pid} ({args.pidfile})")
    console = sidecar.read_console(args.pidfile, pid)  # where the App said its console listens
    if console is not None:
        print(f"console: {sidecar.describe_console(console)}")
    for worker in workers.worker_pids(pid):
        up = workers.uptime(worker)
        print(f"  worker {worker}" + ("" if up is None else f", up {up:.0f} s"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``archangel`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
            return demo.run(
                port=args.port,
                console_port=args.console_port,
                interval=args.interval,
                seconds=args.seconds,
                loop=args.loop,
            )
        if args.command == "run":
            return _run(args)
        if args.command == "signal":
            return _signal(args)
        if args.command == "status":
            return _status(args)
        if args.command == "console":
            from .console import client

            token = ["--token", args.token] if args.token else []
            commands = [arg for command in args.commands or () for arg in ("-c", command)]
            return client.main([args.address, *token, *commands])
    except UsageError as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return 2
    except PidFileUnusable as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return EXIT_STATUS.get(exc.reason, 6)
    except (DaemonError, RunError) as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse requires one


if __name__ == "__main__":
    sys.exit(main())
