"""An app's own console commands, the REPL's statements and ``await``, prefixes and typos."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
import telnetlib3

from archangel import ProcessManager
from archangel.console import Command, CommandError, Console, Terminal
from archangel.errors import ConsoleError
from tests.console_helpers import PROMPT, TIMEOUT, Light, RawClient, Screen, open_telnet

COLOURS = ("red", "green", "grey")


async def test_commands_from_the_constructor_and_the_decorator() -> None:
    manager = ProcessManager()
    calls: list[int] = []

    async def greet(args: list[str], terminal: Terminal) -> str:
        if not args:
            raise CommandError("usage: greet NAME")
        return f"hello, {' '.join(args)} (width {terminal.width})"

    console = Console(
        manager,
        commands=[Command("greet", greet, "greet NAME", "say hello", "Says hello to NAME.")],
    )

    @console.command(help="paint a colour", usage="paint COLOUR", complete=lambda w: COLOURS)
    def paint(args: list[str], terminal: Terminal) -> str:
        """Ignored first line.

        Paints with COLOUR.
        """
        calls.append(threading.get_ident())
        return f"painted {args[0]}"

    @console.command("on-loop", app_loop=True, changes=True)
    def on_loop(args: list[str], terminal: Terminal) -> str:
        """Say which thread runs it."""
        calls.append(threading.get_ident())
        return f"{len(manager)} processes, on the app loop"

    manager.register(Light())
    with console:
        async with await RawClient.open(console.address) as client:
            assert await client.ask("greet you") == "hello, you (width 80)"
            assert await client.ask("greet") == "error: usage: greet NAME"
            assert await client.ask("paint red") == "painted red"
            assert calls[-1] != threading.get_ident()  # the console's own thread
            assert await client.ask("on-loop") == "1 processes, on the app loop"
            assert calls[-1] == threading.get_ident()  # the app loop's thread
            assert await client.ask("") == ""  # changes=True: Enter does not repeat it
            assert len(calls) == 2
            listing = await client.ask("help")
            assert "  greet " in listing and "say hello" in listing
            assert "paint a colour" in listing and "Say which thread runs it." in listing
            assert (
                await client.ask("help paint")
                == "paint COLOUR\n  paint a colour\n\nPaints with COLOUR."
            )
            assert (
                await client.ask("help greet") == "greet NAME\n  say hello\n\nSays hello to NAME."
            )
        # Tab completes the arguments a command offers, shown as it is typed.
        screen, writer = await open_telnet(console)
        try:
            writer.write("paint r\t")
            await screen.until("ed ")
            writer.write("\r\n")
            assert "painted red" in await screen.until(PROMPT)
            writer.write("paint g\t")  # green and grey: the common part, then the list
            await screen.until("r")
            writer.write("\t")
            await screen.until("green  grey")
            writer.write("\x03")
            await screen.until("^C")
            await screen.until(PROMPT)
            writer.write("help gr\t")  # help completes command names
            await screen.until("eet ")
            writer.write("\r\n")
            assert "say hello" in await screen.until(PROMPT)
        finally:
            writer.close()
    with pytest.raises(ConsoleError, match="before start"):
        console.command("late")(paint)
    with pytest.raises(ConsoleError, match="must be one word"):
        Console(manager, commands=[Command("two words", greet, "", "")])


async def test_the_repl_runs_statements_and_top_level_await_with_its_locals() -> None:
    manager = ProcessManager()
    done = asyncio.Event()

    async def answer() -> int:
        return 42

    with Console(manager, repl=True, locals={"answer": answer, "done": done}) as console:
        async with await RawClient.open(console.address, banner=False) as client:
            await client.read_until(PROMPT)
            assert await client.ask("py await answer()") == "42"
            assert await client.ask("py x = await answer(); y = x + 1") == ""
            assert await client.ask("py (x, y)") == "(42, 43)"
            ident = await client.ask("py import threading; t = threading.get_ident()")
            assert ident == ""
            assert await client.ask("py t") == str(threading.get_ident())
            assert await client.ask("py done.set()") == "None"
            assert done.is_set()  # the Event belongs to the app loop: set on it
            assert await client.ask("py for i in range(3): x += i") == ""
            assert await client.ask("py x") == "45"
            assert "py failed: NameError" in await client.ask("py nothing_here")
            assert await client.ask("py def f(:") == "error: syntax error: invalid syntax"
    # The names bound are per console: a new console starts afresh.
    with Console(manager, repl=True) as console:
        async with await RawClient.open(console.address, banner=False) as client:
            await client.read_until(PROMPT)
            assert "NameError" in await client.ask("py x")


async def test_prefixes_ambiguity_and_did_you_mean() -> None:
    manager = ProcessManager()
    lights = [manager.register(Light()) for _ in range(2)]
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:
            assert "showing 1-2 of 2" in await client.ask("ps")
            assert (await client.ask("hist")) == "no completed processes yet"
            assert (await client.ask("inf 1")).startswith("pid       1\n")
            assert await client.ask("st") == "error: st is ambiguous: stack, stats, stop"
            assert await client.ask("k 1") == "error: k is ambiguous: kill, killall"
            assert await client.ask("hisotry") == (
                "error: unknown command hisotry: did you mean history?"
            )
            assert await client.ask("tasks-all") == (
                "error: unknown command tasks-all: did you mean tasks?"
            )
            assert (
                await client.ask("zzzz") == "error: unknown command zzzz: type help for the list"
            )
            assert (await client.ask("help wh")).startswith("where TASK\n")
            # A Tab sent by a client that echoes itself (nc, line mode) is a
            # blank on its screen: so it is a blank here, never a completion.
            await client.send("ki\t1\n")
            reply = await client.read_until(PROMPT)
            assert reply.startswith("error: ki is ambiguous: kill, killall")
    assert all(light.state.value == "new" for light in lights)


# -- widths, info and stack -l ---------------------------------------------------------------


class Wordy(Light):
    __slots__ = ()

    def details(self) -> dict[str, object]:
        return {"path": "/srv/" + "x" * 300, "peer": ("127.0.0.1", 5555)}


async def test_ps_fits_details_to_the_screen_and_info_shows_them_whole() -> None:
    manager = ProcessManager()
    wordy = manager.register(Wordy())
    path = "/srv/" + "x" * 300
    with Console(manager) as console:
        async with await RawClient.open(console.address) as client:  # nc: no NAWS, 80 columns
            listing = await client.ask("ps")
            row = listing.splitlines()[1]
            assert row.split()[:2] == [str(wordy.pid), "light"] and row.endswith("...")
            assert len(row) == 80
            info = await client.ask(f"info {wordy.pid}")
            assert f"\ndetails   path={path}\n          peer=127.0.0.1:5555" in info
            assert path in await client.ask("ps --json")
        assert isinstance(console.address, tuple)
        reader, writer = await telnetlib3.open_connection(
            *console.address, cols=150, rows=40, connect_minwait=0.05, connect_maxwait=1.0
        )
        screen = Screen(reader)
        try:
            await screen.until(PROMPT)
            # Typed before the console offers telnet, a line would make it a raw client.
            async with asyncio.timeout(TIMEOUT):
                while not writer.will_echo:
                    await asyncio.sleep(0.001)
            writer.write("ps\r\n")
            out = await screen.until("showing 1-1 of 1")
            row = next(line for line in out.splitlines() if "path=" in line)
            assert len(row) == 150 and row.endswith("...")  # the width the client told (NAWS)
        finally:
            writer.close()


async def test_stack_limit_takes_1_or_more_frames() -> None:
    with Console(ProcessManager()) as console:
        async with await RawClient.open(console.address) as client:
            one = await client.ask("stack -l 1")
            assert "outer frames not shown" in one
            assert len([line for line in one.splitlines() if line.startswith('  File "')]) == 1
            for bad in ("0", "-2"):
                reply = await client.ask(f"stack -l {bad}")
                assert reply == (
                    f"error: -l is how many frames to show, innermost first: 1 or more, not {bad}"
                )


# -- top and Enter with the line endings real clients send ----------------------------------


@pytest.mark.parametrize("end", ["\r\n", "\r\x00", "\n"])
async def test_top_stays_until_a_key_whatever_the_line_ending(end: str) -> None:
    with Console(ProcessManager()) as console:
        async with await RawClient.open(console.address) as client:
            await client.send(f"top -i 0.2{end}")
            await client.read_until("(any key leaves)")
            # The LF or NUL after the CR that started top is not a key: it refreshes.
            screens = await client.read_until("(any key leaves)")
            assert PROMPT not in screens
            await client.send(f"x{end}lag{end}")  # the key that leaves, then a command
            out = await client.read_until("last probe:")
            assert "unknown command x" not in out  # the key left top: it is not a command
            await client.read_until(PROMPT)
            await client.send(end)  # Enter on an empty line: one fresh prompt, nothing else
            assert (await client.read_until(PROMPT)).strip("\n") == PROMPT
            assert await client.ask("lag --json")


async def test_top_leaves_on_one_key_in_telnet_and_enter_gives_one_prompt() -> None:
    with Console(ProcessManager()) as console:
        screen, writer = await open_telnet(console)
        try:
            for _ in range(2):
                writer.write("\r\n")  # Enter on an empty line: a fresh prompt
                await screen.until(PROMPT)
            writer.write("lag\r\n")
            seen = await screen.until("last probe:")
            assert PROMPT not in seen, seen  # one prompt per Enter, no more
            await screen.until(PROMPT)
            writer.write("top -i 0.2\r\n")
            await screen.until("(any key leaves)")
            await screen.until("(any key leaves)")
            writer.write("q")  # one key, no Enter
            await screen.until(PROMPT)
            writer.write("stats\r\n")
            assert "processes: 0 running" in await screen.until(PROMPT)
        finally:
            writer.close()


# -- sessions as processes ------------------------------------------------------------------


async def test_sessions_are_processes_of_kind_console_in_the_consoles_own_view() -> None:
    manager = ProcessManager()
    manager.register(Light())
    with Console(manager, token="tok") as console:
        assert isinstance(console.address, tuple)
        other = await RawClient.open(console.address, banner=False)
        await other.read_until("token: ")  # connected, but not let in
        async with await RawClient.open(console.address, banner=False) as me:
            await me.read_until("token: ")
            await me.send("tok\n")
            await me.read_until(PROMPT)
            listing = await me.ask("sessions")
            lines = listing.splitlines()
            assert lines[0].split() == ["PID", "PEER", "AUTH", "AGE", "IDLE", "RUNNING"]
            mine = next(line for line in lines if "(you)" in line)
            assert re.match(r"^\s*2\s+127\.0\.0\.1:\d+ \(you\)\s+yes\s.*\ssessions$", mine)
            theirs = next(line for line in lines[1:-1] if "(you)" not in line)
            assert re.match(r"^\s*1\s+127\.0\.0\.1:\d+\s+no\s.*\s-$", theirs)
            assert lines[-1] == "2 sessions open"
            # ps shows them under their kind, with the console's own PIDs.
            ps = await me.ask("ps console")
            assert "showing 1-2 of 2" in ps and "session from 127.0.0.1:" in ps
            assert "showing 1-1 of 1" in await me.ask("ps")  # the app's view is the app's
            data = json.loads(await me.ask("sessions --json"))
            assert [s["authenticated"] for s in data["sessions"]] == [False, True]
            assert await me.ask("sessions --kill 2") == (
                "error: that is this session: type quit to leave"
            )
            assert (await me.ask("sessions --kill 1")).endswith("): closed")
            assert await other.read_all() == ""  # its connection was closed
            await until_sessions(me, "1 session open")
        await other.close()


async def until_sessions(client: RawClient, last: str) -> None:
    async with asyncio.timeout(10):
        while (await client.ask("sessions")).splitlines()[-1] != last:
            await asyncio.sleep(0.01)
