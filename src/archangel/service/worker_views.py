"""What a master of workers shows of them: its private runtime directory and its dump.

* The **runtime directory**: made by the master when the App has a console,
  mode 0700 (``tempfile.mkdtemp``) under ``$XDG_RUNTIME_DIR`` or the temp
  directory; when the workers drop to the App's ``user``/``group``, under the
  temp directory and owned by them. Each worker's console listens there on
  ``<pid>.sock`` (mode 0600), for the master's console alone; the directory
  is removed when the master exits. With ``App(web=...)``, each worker's
  web server listens there too, on ``<pid>.web.sock`` (mode 0600), for the
  master's web server alone (:func:`worker_web`).
* :func:`forget_master_console`: in a fresh worker, closes the descriptors of
  the master's console that the fork copied (its listening socket, its
  sessions, its connections to other workers' consoles), so that a session
  the master closes is closed for its client, and no worker holds another's.
* :func:`master_document` and :func:`write_master_dump`: the master's own
  state and runlog dumps, which name every worker and point at the dump each
  worker writes of its processes. With a console, the master's console
  writes the state dump once more with each worker's processes, asked of the
  workers' consoles (:meth:`~archangel.console.workers.MasterConsole.write_dump`).

Nothing here runs a loop or forks; :mod:`archangel.service.workers` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from typing import Any

from . import daemon

__all__ = [
    "console_path",
    "dump",
    "forget_master_console",
    "make_runtime_dir",
    "master_document",
    "per_worker_path",
    "remove_runtime_dir",
    "uptime",
    "web_path",
    "worker_console",
    "worker_pids",
    "worker_table",
    "worker_web",
    "write_master_dump",
]

logger = logging.getLogger(__name__)


def make_runtime_dir(name: str, user: Any = None, group: Any = None) -> str:
    """A new private directory (mode 0700) for the workers' consoles; its path.

    Owned by ``user``/``group`` when given and the master runs as root, so
    that workers which drop to them can still make their sockets there.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base) or user is not None or group is not None:
        base = None  # (a worker that drops to another user could not enter root's)
    prefix = "archangel-" + "".join(c if c.isalnum() else "-" for c in name)[:24] + "-"
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    if (user is not None or group is not None) and os.geteuid() == 0:
        uid, _, gid = daemon._resolve_user(user) if user is not None else (-1, None, -1)
        if group is not None:
            gid = daemon._resolve_group(group)
        os.chown(path, uid, -1 if gid is None else gid)
    return path


def remove_runtime_dir(path: str) -> None:
    """Remove the runtime directory and what is left in it (never raises)."""
    shutil.rmtree(path, ignore_errors=True)


def console_path(runtime_dir: str, pid: int) -> str:
    """Where worker ``pid``'s console listens."""
    return os.path.join(runtime_dir, f"{pid}.sock")


def web_path(runtime_dir: str, pid: int) -> str:
    """Where worker ``pid``'s web server listens."""
    return os.path.join(runtime_dir, f"{pid}.web.sock")


def forget_master_console(address: Any, runtime_dir: str) -> None:
    """In a worker, just forked: close the master console's descriptors it inherited.

    They are found by what they are, not from a list kept by the console's
    thread (which the fork may have caught between an ``accept`` and its
    bookkeeping): every socket on the console's port or path (the listening
    socket, and each session accepted on it), and every socket connected to
    a worker's console in ``runtime_dir``.
    """
    if isinstance(address, list | tuple):
        address = tuple(address[:2])
    inside = os.path.join(runtime_dir, "")
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd <= 2:
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket (or the listing's own descriptor, closed since)
            continue
        try:
            mine = _is_console(sock, address, inside)
        finally:
            sock.detach()
        if mine:
            with contextlib.suppress(OSError):
                os.close(fd)


def _is_console(sock: socket.socket, address: Any, inside: str) -> bool:
    try:
        own = sock.getsockname()
    except OSError:
        return False
    if isinstance(own, tuple) and isinstance(address, tuple):
        # By port alone: a session accepted on a console bound to 0.0.0.0 has
        # the address it came in on (127.0.0.1, say), not 0.0.0.0.
        return bool(own[1] == address[1] and sock.type == socket.SOCK_STREAM)
    if address is not None and own == address:  # a Unix socket: its path
        return True
    if sock.family != socket.AF_UNIX:
        return False
    try:
        peer = sock.getpeername()
    except OSError:
        return False
    return isinstance(peer, str) and peer.startswith(inside)


def worker_table(master: Any) -> list[dict[str, Any]]:
    """``master``'s workers now, by place (safe to call from another thread).

    Each is a dict of ``place``, ``pid``, ``state`` (``starting`` until its
    App is in RUN, then ``ready``; ``stopping`` once asked to stop),
    ``started`` (epoch seconds), ``restarts`` (of its place, after
    failures), ``console`` (its console's Unix socket, or None) and ``web``
    (its web server's Unix socket, or None).
    """
    now, clock = time.time(), time.monotonic()
    where = master.runtime_dir
    console = where is not None and master.app.console_options is not None
    has_web = where is not None and master.app.web is not None
    rows = []
    for w in sorted(master.workers.values(), key=lambda w: (w.slot, w.pid)):
        rows.append(
            {
                "place": w.slot,
                "pid": w.pid,
                "state": "stopping" if w.retiring else "ready" if w.ready else "starting",
                "started": now - (clock - w.started),
                "restarts": master.restarts.get(w.slot, 0),
                "console": console_path(where, w.pid) if console else None,
                "web": web_path(where, w.pid) if has_web else None,
            }
        )
    return rows


def worker_console(master: Any, own: Any, pid: int) -> dict[str, Any] | None:
    """In worker ``pid``, just forked: its console's options, or None (no console).

    A private Unix socket in the master's runtime directory, with the App
    console's ``repl``, ``commands`` and ``locals`` (``own``). The master
    console's descriptors the fork copied are closed first.
    """
    if master.runtime_dir is None:
        return None
    address = None if master.console is None else master.console.address
    forget_master_console(address, master.runtime_dir)
    web = getattr(master, "web", None)
    if web is not None and web.address is not None:
        forget_master_console(web.address, master.runtime_dir)
    if own is None:
        return None
    options = {k: own[k] for k in ("repl", "commands", "locals") if k in (own or {})}
    return {**options, "path": console_path(master.runtime_dir, pid)}


def worker_web(master: Any, app: Any, pid: int) -> None:
    """In worker ``pid``, just forked: its App's web server moves to a private Unix socket.

    The App's web options stay (token, thresholds), but the server listens
    on :func:`web_path` in the master's runtime directory, never on the
    App's host and port: those are the master's web server's.
    """
    if app.web is not None and master.runtime_dir is not None:
        app.web = app.web_on(web_path(master.runtime_dir, pid))


def dump(master: Any, which: str) -> None:
    """Write ``master``'s ``"state"`` or ``"runlog"`` dump to the App's file; log, never raise."""
    path = master.app.state_file if which == "state" else master.app.runlog_file
    document = master_document(master, which)
    try:
        write_master_dump(path, document)
    except OSError as exc:
        logger.error("%s: master cannot write its %s dump %s: %s", master.name, which, path, exc)
    else:
        logger.info("%s: master wrote its %s dump %s", master.name, which, path)
    if which == "state" and master.console is not None:  # then again, with the processes
        master.console.write_dump(document, lambda doc: write_master_dump(path, doc))


def master_document(master: Any, which: str) -> dict[str, Any]:
    """The master's ``"state"`` or ``"runlog"`` dump: itself, and every worker.

    Each worker is named with its place, pid, state, uptime, restarts and
    the file where it writes its own dump of the same kind (its processes).
    """
    key = "state_file" if which == "state" else "runlog_file"
    now = time.time()
    workers = []
    for row in master.worker_table():
        pid = row["pid"]
        row = {**row, "uptime": max(0.0, now - row["started"])}
        row[key] = per_worker_path(getattr(master.app, key), pid)
        workers.append(row)
    console = getattr(master.console, "address", None)
    return {
        "name": master.app.name,
        "kind": f"master {which}",
        "written": now,
        "master": {"pid": os.getpid(), "count": master.count, "console": console},
        "workers": workers,
    }


def write_master_dump(path: str, document: dict[str, Any]) -> str:
    """Write ``document`` as JSON to ``path`` atomically (a file beside it, renamed)."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def per_worker_path(path: str, pid: int) -> str:
    """A worker's own dump file: ``path`` with its pid before the extension.

    ``/tmp/web.state.json`` for worker 4242 is ``/tmp/web.state.4242.json``.
    """
    root, ext = os.path.splitext(path)
    return f"{root}.{pid}{ext}"


def worker_pids(master: int) -> list[int]:
    """The workers of master ``master``, from ``/proc``: its children forked, not executed.

    A worker is a forked copy of its master, with its command line; a child
    that executed a program of its own is not one.
    """
    try:
        with open(f"/proc/{master}/cmdline", "rb") as f:
            cmdline = f.read()
        entries = os.listdir("/proc")
    except OSError:
        return []
    pids = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) != master or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() != cmdline:
                    continue
        except OSError:
            continue
        pids.append(int(entry))
    return sorted(pids)


def uptime(pid: int) -> float | None:
    """Seconds since process ``pid`` started, from ``/proc``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            started = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            now = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, now - started / os.sysconf("SC_CLK_TCK"))
