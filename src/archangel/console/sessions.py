"""The console's sessions as processes of kind ``console``, and the ``sessions`` command.

Each console keeps its own :class:`~archangel.ProcessManager` of its
sessions, used on the console's thread only (the app's manager stays the app
loop's). A session is registered when its connection is made and exits when
the session ends, so ``sessions`` and ``ps --kind console`` show who is
connected, from where, and what they run; ``sessions --kill N`` ends one.
"""

from __future__ import annotations

import time
from typing import Any

from ..kernel.manager import ProcessManager
from ..kernel.process import Process
from .commands import Command, CommandError, Context, Terminal, parse_options, plural
from .render import fit, format_age, table, to_json
from .session import Session

__all__ = ["SessionProcess", "session_commands"]

_KIND = "console"
_HEADERS = ("PID", "PEER", "AUTH", "AGE", "IDLE", "RUNNING")


class SessionProcess(Process):
    """One console session, as a process of kind ``console`` in the console's own manager.

    Killing it (``sessions --kill PID``) aborts its connection.
    """

    kind = _KIND

    def __init__(self, session: Session) -> None:
        self.session = session
        self.name = f"session from {session.peer}"

    def details(self) -> dict[str, Any]:
        """The client's address, whether it is let in, how long idle, the command it runs."""
        session = self.session
        return {
            "peer": session.peer,
            "authenticated": session.authenticated,
            "idle": round(session.idle, 1),
            "running": session.command or "-",
        }


class _Sessions:
    def __init__(self, context: Context, manager: ProcessManager) -> None:
        self.context = context
        self.manager = manager

    async def sessions(self, args: list[str], terminal: Terminal) -> str:
        opts, positional = parse_options(args, {"--json": bool, "--kill": int})
        if positional:
            raise CommandError("usage: sessions [--json] [--kill PID]")
        if "--kill" in opts:
            pid = opts["--kill"]
            process = self.manager.get(pid)
            if process is None:
                raise CommandError(f"no console session with pid {pid}: see 'sessions'")
            if isinstance(process, SessionProcess) and process.session is terminal:
                raise CommandError("that is this session: type quit to leave")
            process.kill()
            return f"session {pid} ({process.details()['peer']}): closed"
        procs = self.manager.processes()
        if opts.get("--json"):
            return to_json({"sessions": [{"pid": p.pid, **p.details()} for p in procs]})
        now = time.time()
        rows = []
        for p in procs:
            details = p.details()
            you = " (you)" if isinstance(p, SessionProcess) and p.session is terminal else ""
            rows.append(
                (
                    str(p.pid),
                    details["peer"] + you,
                    "yes" if details["authenticated"] else "no",
                    format_age(None if p.started is None else now - p.started),
                    format_age(details["idle"]),
                    details["running"],
                )
            )
        text = table(_HEADERS, fit(_HEADERS, rows, terminal.width))
        return f"{text}\n{plural(len(rows), 'session')} open"


def session_commands(context: Context, manager: ProcessManager) -> list[Command]:
    """The ``sessions`` command, over the console's own manager of sessions."""
    sessions = _Sessions(context, manager)
    return [
        Command(
            "sessions",
            sessions.sessions,
            "sessions [--json] [--kill PID]",
            "the console's sessions: who is connected, from where, running what",
            "Each session is a process of kind console in the console's own manager\n"
            "(so 'ps console' lists them too, with PIDs of their own, not the app's).\n"
            "--kill PID closes another session.",
            changes=True,
        ),
    ]
