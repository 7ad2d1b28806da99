"""The file beside a pidfile where a running service says where its console listens.

``archangel status --pidfile PATH`` knows only the pidfile, and the console's
port is often picked by the kernel (``port=0``), so the App writes it down:
``PATH.console.json`` holds ``{"pid": ..., "console": {...}}``, the console
entry being what the state dump's ``settings.console`` holds (the address,
never the token: only whether one is asked for). It is written atomically
(a temporary file renamed into place) once the console listens, readable by
everyone (an address is no secret), and removed at exit if it still names
our PID. A reader ignores a file that names another PID (a service that
died without removing it).

Writing is best-effort: a service that can no longer write the pidfile's
directory (privileges dropped before the console started) logs a warning
and runs on; ``status`` then only lacks the console line. Plain
operating-system calls, no asyncio.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["console_path", "describe_console", "read_console", "remove_console", "write_console"]

logger = logging.getLogger(__name__)

#: The largest sidecar read: a console entry is a few dozen bytes.
_MAX_SIZE = 1 << 16


def console_path(pidfile: str | os.PathLike[str]) -> str:
    """Where the service holding ``pidfile`` says where its console listens."""
    return f"{os.fspath(pidfile)}.console.json"


def write_console(pidfile: str | os.PathLike[str], console: Mapping[str, Any]) -> bool:
    """Write ``console`` (with our PID) beside ``pidfile``; False (and a warning) if it cannot."""
    path = console_path(pidfile)
    temp = f"{path}.{os.getpid()}.tmp"
    data = json.dumps({"pid": os.getpid(), "console": dict(console)}).encode() + b"\n"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        logger.warning(
            "cannot write %s (%s): archangel status will not show the console", path, exc
        )
        try:
            os.unlink(temp)
        except OSError:
            pass
        return False
    return True


def read_console(pidfile: str | os.PathLike[str], pid: int) -> dict[str, Any] | None:
    """The console entry the service ``pid`` wrote beside ``pidfile``; None if there is none.

    None too for a file that names another PID, is not JSON, or cannot be read.
    """
    try:
        with open(console_path(pidfile), "rb") as file:
            data = json.loads(file.read(_MAX_SIZE))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("pid") != pid:
        return None
    console = data.get("console")
    return console if isinstance(console, dict) else None


def remove_console(pidfile: str | os.PathLike[str]) -> None:
    """Remove the file :func:`write_console` wrote, if it still names our PID."""
    if read_console(pidfile, os.getpid()) is None:
        return
    try:
        os.unlink(console_path(pidfile))
    except OSError:
        pass


def describe_console(console: Mapping[str, Any]) -> str:
    """A console entry as an operator types it: ``127.0.0.1:8023`` or ``unix:PATH``.

    ``(token required)`` follows when the console asks for one.
    """
    if console.get("path"):
        where = f"unix:{console['path']}"
    elif ":" in str(console.get("host", "")):
        where = f"[{console['host']}]:{console.get('port')}"
    else:
        where = f"{console.get('host')}:{console.get('port')}"
    return where + (" (token required)" if console.get("token") else "")
