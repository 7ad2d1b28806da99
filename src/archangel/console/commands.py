"""The console's command table: parsing a line, finding the command, running it.

A :class:`CommandTable` is built per console from the command groups in
:mod:`~archangel.console.listing`, :mod:`~archangel.console.diagnostics` and
:mod:`~archangel.console.actions`; there is no global registry. A command is
an async function of (arguments, terminal) returning the text to show.
Bad input from the operator raises :class:`CommandError`, which the table
turns into a one-line ``error: ...`` reply: a console line never takes the
session, the console or the app down.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..kernel.manager import ProcessManager
from .apploop import AppLoop, Status

__all__ = [
    "Command",
    "CommandError",
    "CommandTable",
    "Context",
    "Terminal",
    "clip_word",
    "parse_options",
    "parse_pid",
    "plural",
    "unknown_pid",
]

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """Bad input for a command: shown to the operator as one line, never raised further."""


class Terminal(Protocol):
    """What a command sees of the session that runs it."""

    #: Arguments that show the next page when the operator presses Enter.
    more: list[str] | None

    @property
    def width(self) -> int:
        """Columns of the client's screen (80 when unknown)."""
        ...

    async def show(self, text: str) -> None:
        """Write ``text`` now (for refreshing views such as ``top``)."""
        ...

    async def key(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a key; True if one came (or the client left)."""
        ...

    def quit(self) -> None:
        """End the session once the reply is written."""
        ...


Handler = Callable[[list[str], Terminal], "Awaitable[str] | str"]


@dataclasses.dataclass(frozen=True)
class Command:
    """One console command.

    Attributes:
        name: What the operator types.
        handler: ``async handler(args, terminal) -> text``.
        usage: The synopsis shown by ``help`` (``"ps [KIND] [--json]"``).
        summary: One line for the ``help`` list.
        details: More text for ``help NAME``.
        changes: Whether it changes the app (kill, stop...); such commands
            are never repeated by an empty line.
        raw: Pass the rest of the line as one argument, unsplit (``py``).
        complete: Given the word being typed (an argument), the candidates
            Tab offers for it.
        app_loop: Run the handler on the app loop's thread (through the
            console's hand-off, with its timeouts) rather than the console's:
            what touches the app's objects needs it. It may then read
            ``terminal.width`` only.
    """

    name: str
    handler: Handler
    usage: str
    summary: str
    details: str = ""
    changes: bool = False
    raw: bool = False
    complete: Callable[[str], Iterable[str]] | None = None
    app_loop: bool = False


@dataclasses.dataclass
class Context:
    """What commands work on; one per console.

    Attributes:
        manager: The manager whose processes are shown.
        app: The App-like target, or None for a bare manager.
        apploop: The bridge to the app's loop.
        repl: Whether ``py`` is enabled.
        namespace: The names ``py`` sees (shared by the console's sessions).
        action_timeout: Seconds a hand-off waits for the app loop to pick it up.
        sessions: Returns how many sessions are open.
        max_output: Longest reply, in bytes (JSON listings page themselves to fit).
        started: ``time.monotonic()`` when the console started.
        console_sessions: The console's own manager of its sessions (kind
            ``console``), shown by ``ps console`` and ``sessions``.
    """

    manager: ProcessManager
    app: Any
    apploop: AppLoop
    repl: bool = False
    namespace: dict[str, Any] = dataclasses.field(default_factory=dict)
    action_timeout: float = 1.0
    sessions: Callable[[], int] = lambda: 0
    max_output: int = 1 << 20
    started: float = dataclasses.field(default_factory=time.monotonic)
    console_sessions: ProcessManager | None = None

    def require_app(self, what: str) -> Any:
        """The App-like target, or :class:`CommandError` for a bare manager."""
        if self.app is None:
            raise CommandError(f"{what}: not available: console target is a bare ProcessManager")
        return self.app


def parse_options(
    args: Sequence[str],
    options: Mapping[str, type],
    aliases: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Split ``args`` into options and positional arguments.

    ``options`` maps ``--name`` to ``bool`` (a flag), ``int``, ``float`` or ``str``;
    ``aliases`` maps short forms (``-k``) to long ones. ``--name=value`` and
    ``--name value`` both work; ``--`` ends the options.

    Raises:
        CommandError: An unknown option, a missing or malformed value.
    """
    aliases = aliases or {}
    found: dict[str, Any] = {}
    positional: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--":
            positional.extend(items)
            break
        if not arg.startswith("-") or arg == "-" or arg[1:].isdigit():
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=")
        name = aliases.get(name, name)
        kind = options.get(name)
        if kind is None:
            raise CommandError(f"unknown option {clip_word(name)}")
        if kind is bool:
            if eq:
                raise CommandError(f"option {name} takes no value")
            found[name] = True
            continue
        if not eq:
            value = next(items, "")
            if not value:
                raise CommandError(f"option {name} needs a value")
        try:
            found[name] = kind(value)
        except ValueError:
            raise CommandError(f"option {name} needs a number, not {clip_word(value)}") from None
    return found, positional


def parse_pid(text: str) -> int:
    """A PID typed by the operator.

    Raises:
        CommandError: ``text`` is not a positive integer.
    """
    try:
        pid = int(text)
    except ValueError:
        raise CommandError(f"not a pid: {clip_word(text)}") from None
    if pid <= 0:
        raise CommandError(f"not a pid: {clip_word(text)}")
    return pid


def unknown_pid(manager: ProcessManager, pid: int) -> str:
    """What to tell the operator about a PID the manager has no live process for."""
    if pid <= manager.counters["started"]:  # PIDs are issued 1, 2, 3...
        return f"pid {pid} has already exited"
    return f"no process with pid {pid}"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 process``, ``2 processes``: ``count`` and the noun that goes with it."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


class CommandTable:
    """The commands of one console, by name.

    Args:
        context: What the commands work on.
        groups: Command lists to add (each a sequence of :class:`Command`).
    """

    def __init__(self, context: Context, groups: Iterable[Sequence[Command]] = ()) -> None:
        self.context = context
        self._commands: dict[str, Command] = {}
        self.add(
            Command(
                "help",
                self._help,
                "help [COMMAND]",
                "list commands, or explain one",
                complete=lambda word: self._commands,
            ),
            Command("quit", self._quit, "quit", "leave the console (also: exit, Ctrl-D)"),
        )
        self._aliases = {"exit": "quit", "?": "help"}
        for group in groups:
            self.add(*group)

    def add(self, *commands: Command) -> None:
        """Add commands (a name already taken is replaced)."""
        for command in commands:
            self._commands[command.name] = command

    def __getitem__(self, name: str) -> Command:
        return self._commands[self._aliases.get(name, name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._aliases.get(name, name) in self._commands

    def names(self) -> list[str]:
        """The command names, sorted."""
        return sorted(self._commands)

    def resolve(self, name: str) -> Command:
        """The command ``name`` means: its name, an alias, or a prefix only one name has.

        Raises:
            CommandError: No command has that name or prefix (with the names
                it is close to, if any), or several have the prefix.
        """
        if name in self:
            return self[name]
        matches = sorted(n for n in self._commands if n.startswith(name)) if name else []
        if len(matches) == 1:
            return self._commands[matches[0]]
        if matches:
            raise CommandError(f"{clip_word(name)} is ambiguous: {', '.join(matches)}")
        close = difflib.get_close_matches(name, [*self._commands, *self._aliases], n=3)
        if close:
            raise CommandError(
                f"unknown command {clip_word(name)}: did you mean {' or '.join(close)}?"
            )
        raise CommandError(f"unknown command {clip_word(name)}: type help for the list")

    def complete(self, before: str) -> list[str]:
        """What Tab offers for the last word of ``before`` (the line up to the cursor).

        The first word completes to command names; later ones to what the
        command's :attr:`Command.complete` offers (nothing if it has none).
        """
        words = before.split(" ")
        word = words[-1]
        if len(words) == 1:
            return [name for name in self._commands if name.startswith(word)]
        try:
            command = self.resolve(words[0])
        except CommandError:
            return []
        if command.complete is None:
            return []
        return [c for c in command.complete(word) if c.startswith(word)]

    async def run_line(self, line: str, terminal: Terminal) -> str:
        """Run one line typed by the operator; always returns the text to show."""
        words = line.split(None, 1)
        if not words:
            return ""
        rest = words[1] if len(words) > 1 else ""
        try:
            command = self.resolve(words[0])
        except CommandError as exc:
            return f"error: {exc}"
        if command.raw:
            return await self._call(command, [rest], terminal)
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            return f"error: cannot parse the line: {exc}"
        return await self._call(command, argv[1:], terminal)

    async def run(self, argv: list[str], terminal: Terminal) -> str:
        """Run one command (already split into words); always returns the text to show."""
        try:
            command = self.resolve(argv[0])
        except CommandError as exc:
            return f"error: {exc}"
        return await self._call(command, argv[1:], terminal)

    async def _call(self, command: Command, args: list[str], terminal: Terminal) -> str:
        try:
            if command.app_loop:
                return await self._on_app_loop(command, args, terminal)
            result = command.handler(args, terminal)
            if inspect.isawaitable(result):
                result = await result
            return "" if result is None else str(result)
        except CommandError as exc:
            return f"error: {exc}"
        except Exception as exc:
            line = clip_word(" ".join([command.name, *args]), 200)
            logger.exception("console command %s failed", line)
            return f"error: {command.name} failed: {type(exc).__name__}: {exc}"

    async def _on_app_loop(self, command: Command, args: list[str], terminal: Terminal) -> str:
        timeout = self.context.action_timeout
        outcome = await self.context.apploop.run(
            lambda: command.handler(args, terminal), start_timeout=timeout, finish_timeout=30.0
        )
        status = outcome.status
        if status is Status.DONE:
            return "" if outcome.value is None else str(outcome.value)
        if status is Status.FAILED and isinstance(outcome.error, CommandError):
            return f"error: {outcome.error}"
        if status is Status.FAILED:
            error = outcome.error
            return f"error: {command.name} failed: {type(error).__name__}: {error}"
        if status is Status.QUEUED:
            return (
                f"the app loop is blocked (no answer in {timeout:g} s): {command.name} "
                "is queued and runs when the loop is free; see 'stack'"
            )
        if status is Status.RUNNING:
            return f"{command.name} started on the app loop but has not finished after 30 s"
        return f"{command.name}: the app loop is closed"

    # -- built-in commands ------------------------------------------------------

    async def _help(self, args: list[str], terminal: Terminal) -> str:
        if args:
            command = self.resolve(args[0])
            text = f"{command.usage}\n  {command.summary}"
            return text + (f"\n\n{command.details}" if command.details else "")
        width = max(len(name) for name in self._commands)
        lines = [f"  {c.name.ljust(width)}  {c.summary}" for c in self._commands.values()]
        return (
            "commands:\n"
            + "\n".join(lines)
            + "\n'help COMMAND' shows its options. Enter on an empty line shows the next\n"
            "page of the last listing; it never repeats a command that changes anything."
        )

    async def _quit(self, args: list[str], terminal: Terminal) -> str:
        terminal.quit()
        return "bye"


def clip_word(word: str, width: int = 40) -> str:
    """A word from the operator, cut for echoing back in an error.

    What would not print (control characters, say) is shown as ``?``, so an
    error never writes control sequences to the operator's terminal.
    """
    if not word.isprintable():
        word = "".join(c if c.isprintable() else "?" for c in word)
    return word if len(word) <= width else word[: width - 3] + "..."
