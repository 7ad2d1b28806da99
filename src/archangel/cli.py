"""The ``archangel`` command (also ``python -m archangel``).

Sub-commands parse arguments and call into the library; they own no logic
beyond turning errors into one-line messages and exit statuses:

======  ==============================================================
status  meaning
======  ==============================================================
0       done / the service runs (``status``: even as another user)
1       the service failed, or a pidfile names a process that is gone (stale)
2       bad usage (argparse), or ``MODULE:APP`` cannot be loaded
3       the pidfile does not exist (not running)
4       the pidfile is malformed
5       permission denied (reading the pidfile, or ``signal`` to another user's process)
6       another operating-system error (the pidfile is not a regular file, say)
======  ==============================================================
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from . import demo
from .errors import DaemonError, InvalidArgument, PidFileUnusable
from .service import daemon, workers

__all__ = ["EXIT_STATUS", "load_app", "main"]

#: Exit status per :class:`~archangel.errors.PidFileUnusable` reason.
EXIT_STATUS = {"stale": 1, "missing": 3, "malformed": 4, "permission": 5, "io": 6, "held": 1}

SIGNALS = {
    "int": signal.SIGINT,
    "term": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "hup": signal.SIGHUP,
    "usr1": signal.SIGUSR1,
    "usr2": signal.SIGUSR2,
    "check": 0,
}

_LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class UsageError(Exception):
    """A command-line mistake reported as status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archangel",
        description="An asyncio process manager: run, inspect and signal services.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the demo service on 127.0.0.1", description=demo.__doc__)
    p.add_argument("--port", type=int, default=8888, help="echo port (default 8888; 0: any)")
    p.add_argument("--console-port", type=int, default=8023, help="console port (default 8023)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between ps printouts")
    p.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")

    p = sub.add_parser(
        "run",
        help="run a service: MODULE:APP names an archangel.App",
        description="Run the App named MODULE:APP (an App, or a callable returning one).",
    )
    p.add_argument("target", metavar="MODULE:APP")
    p.add_argument("--daemon", action="store_true", help="detach; return once it runs")
    p.add_argument("--pidfile", help="hold this pidfile while running")
    p.add_argument("--user", help="drop to this user after binding")
    p.add_argument("--group", help="drop to this group after binding")
    p.add_argument("--umask", type=lambda s: int(s, 8), default=None, help="octal, e.g. 022")
    p.add_argument("--workdir", default=None, help="directory to run in (daemon: default /)")
    p.add_argument("--log-file", default=None, help="append logs (and a daemon's stdio) here")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
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
    p.add_argument("--pidfile", required=True)
    p.add_argument("signal", choices=tuple(SIGNALS))

    p = sub.add_parser(
        "status",
        help="say whether the service a pidfile names runs",
        description="Say whether the service a pidfile names runs (exit status 0), or why "
        "not: 1 stale, 3 no pidfile, 4 malformed, 5 permission denied.",
    )
    p.add_argument("--pidfile", required=True)

    p = sub.add_parser(
        "console",
        help="talk to a service's management console",
        description="Talk to an archangel console (the token may also come from "
        "$ARCHANGEL_CONSOLE_TOKEN).",
    )
    p.add_argument("address", help="HOST:PORT, PORT (on 127.0.0.1) or unix:PATH")
    p.add_argument("--token", help="the console's token")
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
    if args.pidfile:
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
        app.pidfile = daemon.PidFile(pidfile)
    if args.user is not None:
        app.user = args.user
    if args.group is not None:
        app.group = args.group
    if args.daemon:
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
            os.chdir(args.workdir)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT, filename=log_file)
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
    signum = SIGNALS[args.signal]
    pid = daemon.send_signal(args.pidfile, signum)
    if signum:
        print(f"sent SIG{args.signal.upper()} to pid {pid}")
    else:
        print(f"running: pid {pid}")
    return 0


def _status(args: argparse.Namespace) -> int:
    pid = daemon.check(args.pidfile, signalable=False)
    print(f"running: pid {pid} ({args.pidfile})")
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
            return client.main([args.address, *token])
    except UsageError as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return 2
    except PidFileUnusable as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return EXIT_STATUS.get(exc.reason, 6)
    except DaemonError as exc:
        print(f"archangel {args.command}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse requires one


if __name__ == "__main__":
    sys.exit(main())
