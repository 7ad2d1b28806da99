"""The master's zero-downtime upgrade: a new master executed with the listening sockets.

gunicorn's and nginx's plan, under SIGURG (USR2 is the state dump here). The
old master forks a child that executes the command line the old master was
started with (``sys.orig_argv``: new code, a new interpreter if need be),
with every listening socket it holds left open across the ``exec`` and named
in ``$ARCHANGEL_MASTER_SOCKETS`` (JSON: each address and its descriptors),
and the old master's pid in ``$ARCHANGEL_MASTER_OLD``. The new master takes
those sockets instead of binding, forks its workers on them, and once every
one is ready sends SIGTERM to the old master, which stops its workers
gracefully and exits. The listening sockets are the same throughout (one
queue, as across a roll): no connection is refused.

This module holds the two ends of the hand-off; the master's loop
(:mod:`archangel.service.workers`) decides when. Nothing here runs a loop.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

from . import systemd

__all__ = ["OLD_ENV", "SOCKETS_ENV", "exec_new_master", "inherited", "take_over"]

logger = logging.getLogger(__name__)

#: The variable naming the sockets a new master inherits.
SOCKETS_ENV = "ARCHANGEL_MASTER_SOCKETS"
#: The variable naming the old master's pid.
OLD_ENV = "ARCHANGEL_MASTER_OLD"


def exec_new_master(
    sockets: dict[tuple[Any, ...], list[socket.socket]],
) -> None:  # pragma: no cover
    """In the child the old master forked: become the new master (never returns).

    ``sockets`` are the old master's listening sockets by address (the
    broker's table); they are kept open across the ``exec``.
    """
    try:
        entries = []
        for key, socks in sockets.items():
            fds = [sock.fileno() for sock in socks]
            for fd in fds:
                os.set_inheritable(fd, True)
            entries.append({"key": list(key), "fds": fds})
        os.environ[SOCKETS_ENV] = json.dumps(entries)
        os.environ[OLD_ENV] = str(os.getppid())
        systemd.claim_listen_fds(os.getppid())  # $LISTEN_PID: the new master's own
        argv = list(sys.orig_argv) or [sys.executable, *sys.argv]
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    finally:
        os._exit(127)


def inherited() -> tuple[int, dict[tuple[Any, ...], list[socket.socket]]] | None:
    """In a new master: the old master's pid and the sockets it handed over, or None.

    The variables are removed from the environment, so that the workers and
    a later upgrade do not see them. A variable that does not parse is
    ignored (None), as is one left by a master that is not this process's parent.
    """
    text = os.environ.pop(SOCKETS_ENV, None)
    old = os.environ.pop(OLD_ENV, None)
    if text is None or old is None or not old.isdigit() or int(old) != os.getppid():
        return None
    try:
        entries = json.loads(text)
        sockets = {
            tuple(entry["key"]): [socket.socket(fileno=int(fd)) for fd in entry["fds"]]
            for entry in entries
        }
    except (ValueError, KeyError, TypeError, OSError):
        return None
    for socks in sockets.values():
        for sock in socks:
            sock.set_inheritable(False)
    return int(old), sockets


def take_over(master: Any, old: int | None) -> None:
    """In a new master, once the old one has exited: hold the pidfile, start the operator servers.

    The operator servers are the console and the web server, each when the App has one.

    Failures are logged: the service runs on in the new master without them.
    """
    app = master.app
    logger.info("%s: old master %s gone: new master %d takes over", app.name, old, master.pid)
    if app.pidfile is not None:
        try:
            app.pidfile.acquire()
        except Exception as exc:
            logger.error("%s: new master cannot hold its pidfile: %s", app.name, exc)
    if app.console_options is not None:
        try:
            master.console = app.master_console(master)
        except Exception as exc:
            logger.error("%s: new master runs without a console: %s", app.name, exc)
    if app.web is not None:
        try:
            master.web = app.master_web(master)
        except Exception as exc:
            logger.error("%s: new master runs without its web server: %s", app.name, exc)
