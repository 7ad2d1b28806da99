"""Console commands that change things: ``kill``, ``killall``, ``stop``, ``reload``, ``dump``.

And ``signal`` (sent from the console's thread: a signal is for the whole
process), and ``py``, only with ``repl=True``. The others are handed to the app's loop (see
:class:`~archangel.console.apploop.AppLoop`) and reports when it took effect;
if the app's loop does not pick it up within the action timeout, the reply
says the loop is blocked and the action is queued (it runs once the loop is
free). Nothing here mutates the manager from the console's thread, and
work on the app's loop is done in slices of about a millisecond
(:class:`~archangel.kernel.slices.TimeSlice`), yielding to the loop
between them (the rules of :mod:`archangel.console.fairness`).
"""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from ..kernel.process import Process, ProcessState
from ..kernel.signames import SIGNAL_NAMES, SIGNALS, signal_key
from .apploop import Outcome, Status
from .commands import (
    Command,
    CommandError,
    Context,
    Terminal,
    clip_word,
    parse_options,
    parse_pid,
    plural,
    unknown_pid,
)
from .fairness import TimeSlice
from .render import describe_error

__all__ = ["MAX_KILL", "action_commands"]

#: How long ``kill`` and ``killall`` wait for processes to exit once killed.
_EXIT_WAIT = 5.0
#: The most PIDs one ``kill`` takes (the console and the web dashboard).
MAX_KILL = 1000
#: How often the app loop is polled, while waiting for killed processes to exit.
_EXIT_POLL = 0.005


def _queued(what: str, timeout: float) -> str:
    return (
        f"the app loop is blocked (no answer in {timeout:g} s): {what} is queued "
        "and runs when the loop is free; see 'stack'"
    )


class _Actions:
    def __init__(self, context: Context, timeout: float) -> None:
        self.context = context
        self.timeout = timeout

    async def _run(
        self, what: str, fn: Callable[[], Any], finish: float = _EXIT_WAIT
    ) -> tuple[bool, Any]:
        """Run ``fn`` on the app loop; (True, value) or (False, message for the operator)."""
        outcome: Outcome = await self.context.apploop.run(
            fn, start_timeout=self.timeout, finish_timeout=finish
        )
        if outcome.status is Status.DONE:
            return True, outcome.value
        if outcome.status is Status.QUEUED:
            return False, _queued(what, self.timeout)
        if outcome.status is Status.RUNNING:
            return False, f"{what} started but has not finished after {finish:g} s"
        if outcome.status is Status.CLOSED:
            return False, f"{what}: the app loop is closed"
        error = outcome.error
        if isinstance(error, OSError) and error.strerror:  # no Python quotes around the path
            where = f": {error.filename}" if error.filename else ""
            return False, f"{what} failed: {type(error).__name__}: {error.strerror}{where}"
        return False, f"{what} failed: {describe_error(error) if error else 'unknown error'}"

    # -- kill ---------------------------------------------------------------------------

    async def kill(self, args: list[str], terminal: Terminal) -> str:
        if not args:
            raise CommandError("usage: kill PID [PID...]")
        pids = list(dict.fromkeys(parse_pid(a) for a in args))
        if len(pids) > MAX_KILL:
            raise CommandError(f"at most {MAX_KILL} pids at a time; use killall KIND")
        manager = self.context.manager
        found: list[tuple[int, Process]] = []

        async def kill_and_wait() -> list[tuple[int, str]]:
            # On the app's loop: kill, then wait until each has exited (its
            # sync at-exit hooks run as it exits, so they have run by then) or
            # _EXIT_WAIT passes.
            report: list[tuple[int, str]] = []
            time_slice = TimeSlice()
            for pid in pids:
                process = manager.get(pid)
                if process is None:
                    report.append((pid, unknown_pid(manager, pid)))
                    continue
                process.kill()
                found.append((pid, process))
                await time_slice.tick()
            deadline = time.monotonic() + _EXIT_WAIT
            while time.monotonic() < deadline and any(
                p.state is not ProcessState.EXITED for _, p in found
            ):
                await asyncio.sleep(_EXIT_POLL)
            for pid, process in found:
                if process.state is ProcessState.EXITED:
                    reason = process.exit_reason.value if process.exit_reason else "unknown"
                    report.append((pid, f"pid {pid}: killed ({process.name}, exit: {reason})"))
                else:
                    report.append(
                        (pid, f"pid {pid}: kill sent; still exiting after {_EXIT_WAIT:g} s")
                    )
            return sorted(report)

        what = f"kill {' '.join(map(str, pids))}"
        ok, value = await self._run(what, kill_and_wait, finish=_EXIT_WAIT + 1.0)
        if not ok:
            return str(value)
        answer = "\n".join(text for _, text in value)
        if not found:  # nothing was killed: a failed command (a script's exit status 1)
            raise CommandError(answer)
        return answer

    async def killall(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1:
            raise CommandError("usage: killall KIND")
        kind = args[0]
        manager = self.context.manager

        async def kill_kind() -> tuple[int, int]:
            # On the app's loop, in slices: find them, kill them, wait for them
            # to exit. Each process is let go of once done with (popped): the
            # last reference to 50,000 dead processes dropped at once (one list)
            # frees them all in one call, holding the GIL for about 5 ms.
            time_slice = TimeSlice()
            found = manager.processes()
            found.reverse()
            killed = 0
            exiting: list[Process] = []
            while found:
                process = found.pop()
                if process.kind == kind:
                    process.kill()
                    killed += 1
                    if process.state is not ProcessState.EXITED:
                        exiting.append(process)  # a connection: exits once its transport has
                await time_slice.tick()
            deadline = time.monotonic() + _EXIT_WAIT
            while exiting and time.monotonic() < deadline:
                await asyncio.sleep(_EXIT_POLL)
                still: list[Process] = []
                while exiting:
                    process = exiting.pop()
                    if process.state is not ProcessState.EXITED:
                        still.append(process)
                    await time_slice.tick()
                exiting = still
            return killed, len(exiting)

        ok, value = await self._run(f"killall {kind}", kill_kind, finish=_EXIT_WAIT + 25.0)
        if not ok:
            return str(value)
        killed, left = value
        kind = clip_word(kind)
        if not killed:
            return f"no running processes of kind {kind}"
        count = plural(killed, "process", "processes")
        text = f"killed {count} of kind {kind}: {killed - left} exited"
        return text + (f", {left} still exiting" if left else "")

    # -- app actions -----------------------------------------------------------------------

    async def stop(self, args: list[str], terminal: Terminal) -> str:
        if args:
            raise CommandError("usage: stop")
        app = self.context.require_app("stop")
        ok, value = await self._run("stop", app.request_stop)
        return "stop requested: the app is shutting down" if ok else str(value)

    async def reload(self, args: list[str], terminal: Terminal) -> str:
        if args:
            raise CommandError("usage: reload")
        app = self.context.require_app("reload")
        ok, value = await self._run("reload", app.reload)
        return "reload done" if ok else str(value)

    async def dump(self, args: list[str], terminal: Terminal) -> str:
        if len(args) != 1 or args[0] not in ("state", "runlog"):
            raise CommandError("usage: dump state|runlog")
        app = self.context.require_app("dump")
        which = args[0]
        ok, value = await self._run(f"dump {which}", lambda: app.dump(which), finish=30.0)
        return f"{which} written to {value}" if ok else str(value)

    async def send_signal(self, args: list[str], terminal: Terminal) -> str:
        """Send a signal to this process (the service), as ``archangel signal`` does."""
        opts, positional = parse_options(args, {"--force": bool}, {"-f": "--force"})
        if len(positional) != 1:
            raise CommandError(f"usage: signal NAME [--force] (NAME: {SIGNAL_NAMES})")
        key = signal_key(positional[0])
        if key is None:
            raise CommandError(f"unknown signal {clip_word(positional[0])}: use {SIGNAL_NAMES}")
        pid = os.getpid()
        signum = SIGNALS[key]
        if not signum:
            return f"running: pid {pid}"
        name = f"SIG{key.upper()}"
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_DFL, None) and not opts.get("--force"):
            # Nothing bound it: its default action ends the process at once,
            # without the graceful stop 'stop' gives (a bare manager, say).
            raise CommandError(
                f"{name} has no handler in pid {pid}: it would end the process at once; "
                "'stop' stops gracefully, or add --force"
            )
        os.kill(pid, signum)
        ignored = " (this process ignores it)" if handler == signal.SIG_IGN else ""
        return f"sent {name} to pid {pid}{ignored}"

    async def py(self, args: list[str], terminal: Terminal) -> str:
        """Run Python on the app loop's thread (``repl=True`` only).

        An expression shows its value's repr; statements (``x = 1``, ``import
        os; os.getpid()``) run and show nothing. ``await`` works at the top
        level; the coroutine that makes runs on the app's loop.
        """
        source = args[0] if args else ""
        if not source.strip():
            raise CommandError("usage: py CODE")
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            code = compile(source, "<console>", "eval", flags=flags)
            expression = True
        except SyntaxError:
            try:
                code = compile(source, "<console>", "exec", flags=flags)
            except SyntaxError as exc:
                raise CommandError(f"syntax error: {exc.msg}") from None
            expression = False
        namespace = self.context.namespace
        ok, value = await self._run("py", lambda: eval(code, namespace), finish=10.0)
        if not ok:
            return str(value)
        return repr(value) if expression else ""


def action_commands(context: Context, timeout: float = 1.0) -> list[Command]:
    """The commands that change things, bound to ``context``.

    Args:
        context: What the commands work on.
        timeout: Seconds to wait for the app loop to pick an action up before
            answering that it is blocked and the action is queued.
    """
    actions = _Actions(context, timeout)
    commands = [
        Command(
            "kill",
            actions.kill,
            "kill PID [PID...]",
            "kill processes and wait for them to exit",
            changes=True,
        ),
        Command(
            "killall",
            actions.killall,
            "killall KIND",
            "kill every running process of one kind",
            changes=True,
        ),
        Command("stop", actions.stop, "stop", "stop the app gracefully", changes=True),
        Command(
            "signal",
            actions.send_signal,
            "signal NAME [--force]",
            "send a signal to this process, as 'archangel signal' does",
            f"NAME: {SIGNAL_NAMES}, in any spelling (TERM, SIGTERM, term); 'check' only\n"
            "says the process runs. What it does is what the app bound to it (TERM and\n"
            "INT stop, HUP reloads, USR1/USR2 write dumps). A signal nothing handles\n"
            "would end the process at once: it is refused unless --force is given.",
            changes=True,
        ),
        Command("reload", actions.reload, "reload", "reload the app (like SIGHUP)", changes=True),
        Command(
            "dump",
            actions.dump,
            "dump state|runlog",
            "write the state or runlog dump (like SIGUSR2/SIGUSR1)",
            changes=True,
        ),
    ]
    if context.repl:
        commands.append(
            Command(
                "py",
                actions.py,
                "py CODE",
                "run Python on the app loop's thread (enabled with repl=True)",
                "An expression shows its value; statements (x = 1; import os) show nothing,\n"
                "and the names they bind stay for the next py (shared by the sessions).\n"
                "Top-level await works; an awaitable result is awaited on the app loop.\n"
                "Names: manager, app, asyncio, and the console's locals=. Anyone who can\n"
                "reach this console can run any code in the process.",
                changes=True,
                raw=True,
            )
        )
    return commands
