"""``MasterConsole``: one console over every worker of ``app.run(workers=N)``.

The master of the workers runs no event loop and has no processes of its
own; this console runs on its own thread and loop in the master, as a
:class:`~archangel.console.Console` does in an App, and answers with the
commands of :mod:`~archangel.console.fleet`: ``workers``, and ``ps``,
``info``, ``kill``, ``where``, ``stack`` over the workers' own consoles
(each on a private Unix socket), ``stop`` and ``reload`` for the whole
service. It listens, limits sessions and checks tokens exactly as a
:class:`~archangel.console.Console` does (it is one, with another command
table): what is reachable from outside is what the App's console was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import ConsoleError
from ..kernel.manager import ProcessManager
from .apploop import AppLoop
from .commands import CommandTable, Context, plural
from .fleet import WorkerTable, fleet_commands
from .relay import NotAnswering, ask_json
from .server import Console
from .session import Settings
from .sessions import session_commands

__all__ = ["MasterConsole"]

logger = logging.getLogger(__name__)

#: The App console's options that belong to a worker's console, not the master's.
_WORKER_ONLY = ("repl", "commands", "locals")


class _Master:
    """The console's target: the master's name, and a manager with no processes."""

    def __init__(self, master: WorkerTable) -> None:
        self.name = master.name
        self.manager = ProcessManager(history=1, name=f"{master.name} master")


class MasterConsole(Console):
    """The console of a master of workers, on its own thread and loop.

    Args:
        master: What it shows (a :class:`~archangel.service.workers.Master`).
        worker_timeout: Seconds each worker's console has to answer one
            question before that worker is shown as not answering.
        options: As :class:`~archangel.console.Console` takes them (``host``,
            ``port``, ``path``, ``token``, the limits). ``repl``, ``commands``
            and ``locals`` are the workers' consoles' (reach them with ``on
            WORKER COMMAND``), not this one's.

    Raises:
        ConsoleError: A bad setting, as :class:`~archangel.console.Console` raises.
    """

    def __init__(
        self, master: WorkerTable, *, worker_timeout: float = 2.0, **options: Any
    ) -> None:
        if worker_timeout <= 0:
            raise ConsoleError(f"worker_timeout must be positive, not {worker_timeout!r}")
        for name in _WORKER_ONLY:
            options.pop(name, None)
        super().__init__(_Master(master), **options)
        self.master = master
        self.worker_timeout = worker_timeout

    def __repr__(self) -> str:
        return "<Master" + super().__repr__()[1:]

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start listening on the console's own thread; return once it listens.

        ``loop`` is not used: the master has no loop of its own, and every
        command runs on the console's.

        Raises:
            ConsoleError: Already started, or the address cannot be bound.
        """
        if not self._is_new():
            raise ConsoleError(f"{self!r} has already been started")
        self._launch(None, self._describe(None))

    async def _main(self) -> None:
        # Whatever would be handed to "the app's loop" runs on the console's own.
        self._apploop = AppLoop(asyncio.get_running_loop(), self.manager)
        await super()._main()

    def write_dump(
        self, document: dict[str, Any], write: Callable[[dict[str, Any]], object]
    ) -> bool:
        """Complete ``document`` (the master's dump) with each worker's processes, then write it.

        Returns at once: on the console's thread, each worker's console is
        asked for ``ps --json`` (its first 10,000 processes, within
        ``worker_timeout``), the answer goes under that worker's
        ``processes`` (or its ``error``), and ``write(document)`` is called
        on a thread of its own (the master's atomic write). False when the
        console does not run (nothing is written).
        """
        loop = self._loop
        if loop is None or loop.is_closed() or self._is_new():
            return False
        coro = self._write_dump(document, write)
        try:
            asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # its loop has ended
            coro.close()
            return False
        return True

    async def _write_dump(
        self, document: dict[str, Any], write: Callable[[dict[str, Any]], object]
    ) -> None:
        async def fill(worker: dict[str, Any]) -> None:
            line = "ps --json --limit 10000"
            try:
                page = await ask_json(worker["console"] or "", line, self.worker_timeout)
            except NotAnswering as exc:
                worker["error"] = str(exc)
            else:
                worker["processes"] = page.get("processes")
                worker["processes_total"] = page.get("total")

        await asyncio.gather(*(fill(worker) for worker in document.get("workers", ())))
        try:
            await asyncio.to_thread(write, document)
        except OSError as exc:
            logger.error("%r: cannot write the master's dump: %s", self, exc)

    def _settings(self) -> Settings:
        assert self._apploop is not None
        context = Context(
            self.manager,
            self.app,
            self._apploop,
            action_timeout=self.action_timeout,
            sessions=lambda: self._table.taken,
            max_output=self.limits.max_output,
            console_sessions=self.sessions,
        )
        table = CommandTable(
            context,
            (
                fleet_commands(context, self.master, self.worker_timeout),
                session_commands(context, self.sessions),
            ),
        )
        master = self.master

        def banner() -> str:
            count = len(master.worker_table())
            return (
                f"archangel console (app {master.name}, master): "
                f"{plural(count, 'worker')}; type 'help' for commands"
            )

        return Settings(table, self.limits, self.token, banner, "archangel> ", digest=self._digest)
