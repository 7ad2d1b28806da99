"""Console parts without sockets: line editor, options, telnet filter, rendering, hand-offs."""

from __future__ import annotations

import asyncio
import operator
import random
import threading
from collections.abc import Callable

import pytest

from archangel import ProcessManager
from archangel.console.apploop import AppLoop, Status
from archangel.console.client import TelnetFilter, parse_address
from archangel.console.commands import CommandError, parse_options
from archangel.console.fairness import _EDIT_STEP, _EDIT_STEP_ECHO, _SORT_CHUNK, Pacer, sorted_head
from archangel.console.lineedit import Key, LineEditor
from archangel.console.render import clip, format_age, format_details, format_ms, table
from archangel.errors import ConsoleError
from archangel.kernel.frames import await_chain

# -- line editor ---------------------------------------------------------------------


def test_lines_in_every_telnet_ending() -> None:
    editor = LineEditor()
    assert editor.feed("ps\r\ninfo 1\r\0stats\nhelp\r") == ("", ["ps", "info 1", "stats", "help"])
    assert editor.feed("\nx") == ("", [])  # LF after a CR split across chunks: one Enter
    assert editor.text == "x"


def test_editing_keys() -> None:
    editor = LineEditor()
    editor.echo = True
    editor.prompt = "> "
    echo, events = editor.feed("pz\x7fs")
    assert events == [] and echo == "pz\b \bs"
    assert editor.feed("\r")[1] == ["ps"]
    assert editor.feed("kill 12\x15info 3\r")[1] == ["info 3"]  # Ctrl-U
    assert editor.feed("ps --kind conn\x17\x17\x17history\r")[1] == ["history"]  # Ctrl-W
    assert editor.feed("ab\x1b[D\x1b[DX\x05Y\r")[1] == ["XabY"]  # arrows, Ctrl-E
    assert editor.feed("abc\x01\x1b[3~\x1b[C\x0b\r")[1] == ["b"]  # Home, Delete, Ctrl-K
    assert editor.feed("a\x02b\x06c\x1bOH\x1b[1~d\r")[1] == ["dbac"]  # Ctrl-B/F, SS3 Home
    assert editor.feed("\x1bxq\r")[1] == ["q"]  # Alt-x is ignored


def test_history_walks_and_keeps_the_unfinished_line() -> None:
    editor = LineEditor(history=2)
    editor.echo = True
    for line in ("one", "two", "two", "three"):
        editor.feed(line + "\r")
    assert editor.history == ["two", "three"]  # bounded, no repeats
    editor.feed("dra")
    editor.feed("\x1b[A\x1b[A")
    assert editor.text == "two"
    editor.feed("\x1b[A")  # the oldest: a bell, no change
    assert editor.text == "two"
    editor.feed("\x1b[B\x0e")  # Down, Ctrl-N: back to the draft
    assert editor.text == "dra"
    editor.feed("\x10")  # Ctrl-P
    assert editor.feed("\r")[1] == ["three"]


def test_keys_interrupt_eof_and_too_long() -> None:
    editor = LineEditor(max_length=8)
    assert editor.feed("kill 1\x03")[1] == [Key.INTERRUPT]
    assert editor.text == ""
    assert editor.feed("\x04")[1] == [Key.EOF]
    assert editor.feed("abc\x01\x04\r")[1] == ["bc"]  # Ctrl-D inside a line deletes
    assert editor.feed("123456789\r")[1] == [Key.TOO_LONG]  # no echo: refused whole
    assert editor.feed("ok\r")[1] == ["ok"]
    editor.echo = True
    echo, events = editor.feed("123456789\r")
    assert echo == "\a12345678\r\n"  # with echo: it stops growing, with a bell...
    assert events == [Key.TOO_LONG]  # ...and is refused whole, never cut short and run
    assert editor.feed("kill 1 2 3\x7f\x7f\x7f\x7f\r")[1] == [Key.TOO_LONG]  # even once shorter
    assert editor.feed("kill 1 2 3\x15ps\r")[1] == ["ps"]  # Ctrl-U: the whole line is gone
    assert editor.history == ["bc", "ok", "ps"]  # refused lines are not remembered


def test_redraws_are_coalesced_and_never_built_without_echo() -> None:
    editor = LineEditor(max_length=5000)
    editor.prompt = "> "
    editor.feed("x" * 4000)
    assert editor.feed("\x0c" * 10_000 + "\x1b[D" * 100) == ("", [])  # no echo: nothing
    editor.echo = True
    echo, _ = editor.feed("\x0c" * 10_000)  # a flood of Ctrl-L: one clear, one redraw
    assert echo == "\x1b[H\x1b[2J\r> " + "x" * 4000 + "\x1b[K\x1b[100D"
    echo, _ = editor.feed("\x1b[D" * 10 + "\x0c" + "\x1b[D" * 10 + "y\x7f" * 100)
    assert echo.startswith("\x1b[1D" * 10 + "\x1b[H\x1b[2J\r> xxx")  # moves shown, then...
    assert len(echo) < 4100 and echo.endswith("\x1b[120D")  # ...one redraw, cursor put back
    editor.feed("\r")
    echo, events = editor.feed("\x1b[A" + "\x1b[B\x1b[A" * 1000 + "\r")  # one redraw
    assert events == ["x" * 4000] and len(echo) < 2 * 4100


def test_step_feeds_a_bounded_piece() -> None:
    editor = LineEditor(complete=lambda word: ["alpha", "beta"])
    assert editor.step("ps\r\ninfo 1\r\n") == ("", ["ps"], 3)
    assert editor.step("ps\r\ninfo 1\r\n", 3) == ("", ["info 1"], 11)
    assert editor.step("ps\r\ninfo 1\r\n", 11) == ("", [], 12)  # the LF of CR LF
    assert editor.step("x" * 5000)[2] == _EDIT_STEP
    editor.clear()
    editor.echo = True
    editor.feed("x" * 4000 + "\x01")
    echo, events, end = editor.step("\x0c\x03" * 1000)  # each ^C shows the line it drops
    assert events == [Key.INTERRUPT] and end == 2 and len(echo) < 4100
    editor.feed("x" * 4000 + "\x01")
    echo, _, end = editor.step("\t" * 5000)  # each Tab lists, then redraws 4000 characters
    assert "alpha  beta" in echo
    assert end < 10 and len(echo) <= _EDIT_STEP_ECHO + 2 * 4100  # bounded per step


def test_secret_lines_are_not_echoed_or_remembered() -> None:
    editor = LineEditor()
    editor.echo = True
    editor.secret = True
    echo, events = editor.feed("s3cret\x7f\r")
    assert events == ["s3cre"]
    assert "s3c" not in echo
    assert editor.history == []


def test_tab_completion() -> None:
    editor = LineEditor(
        complete=lambda word: [n for n in ("ps", "pipes", "help") if n.startswith(word)]
    )
    editor.echo = True
    assert editor.feed("he\t")[0].endswith("lp ")
    editor.clear()
    echo, _ = editor.feed("p\t")
    assert "pipes  ps" in echo  # two candidates: listed
    editor.clear()
    assert "\a" in editor.feed("zz\t")[0]


def test_without_echo_nothing_is_written() -> None:
    editor = LineEditor()
    assert editor.feed("abc\x7f\x1b[D\x0c\x03") == ("", [Key.INTERRUPT])
    assert editor.redraw() == ""


# -- sorting in chunks ------------------------------------------------------------------------


def test_sorted_head_is_one_stable_sort_done_in_chunks() -> None:
    rng = random.Random(7)
    items = [(rng.choice("abcde") + str(rng.randrange(50)), n) for n in range(3 * _SORT_CHUNK + 5)]
    key: Callable[[tuple[str, int]], str] = operator.itemgetter(0)
    for reverse in (False, True):
        expected = sorted(items, key=key, reverse=reverse)
        for count in (0, 1, 50, _SORT_CHUNK + 1, len(items), len(items) + 10):
            assert sorted_head(items, key, reverse, count) == expected[:count]
    assert sorted_head(items[:10], key, False, 3) == sorted(items[:10], key=key)[:3]


# -- options, addresses, telnet bytes -------------------------------------------------------


def test_parse_options() -> None:
    spec = {"--kind": str, "--limit": int, "--json": bool, "--every": float}
    opts, rest = parse_options(
        ["conn", "-k", "task", "--limit=5", "--json", "--every", "0.5", "--", "--x"],
        spec,
        {"-k": "--kind"},
    )
    assert opts == {"--kind": "task", "--limit": 5, "--json": True, "--every": 0.5}
    assert rest == ["conn", "--x"]
    assert parse_options(["-3"], spec) == ({}, ["-3"])  # a negative number is positional
    for bad, message in (
        (["--nope"], "unknown option"),
        (["--limit"], "needs a value"),
        (["--limit", "x"], "needs a number"),
        (["--json=yes"], "takes no value"),
    ):
        with pytest.raises(CommandError, match=message):
            parse_options(bad, spec)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:8023") == ("127.0.0.1", 8023)
    assert parse_address("[::1]:8023") == ("::1", 8023)
    assert parse_address("8023") == ("127.0.0.1", 8023)
    assert parse_address("unix:/run/app.sock") == "/run/app.sock"
    assert parse_address("/run/app.sock") == "/run/app.sock"
    for bad in ("host:port", "unix:", ":80", "host:0", "host:99999", "localhost"):
        with pytest.raises(ConsoleError):
            parse_address(bad)


def test_telnet_filter_strips_commands_and_refuses_options() -> None:
    telnet = TelnetFilter()
    data, replies = telnet.feed(b"\xff\xfd\x18hi\xff\xff\xff\xfb\x01!")
    assert data == b"hi\xff!"
    assert replies == b"\xff\xfc\x18\xff\xfe\x01"  # WONT TTYPE, DONT ECHO
    # Split across chunks, with a subnegotiation and a two-byte command.
    assert telnet.feed(b"a\xff") == (b"a", b"")
    assert telnet.feed(b"\xfa\x18\x01\xff") == (b"", b"")
    assert telnet.feed(b"\xf0b\xff\xf9c") == (b"bc", b"")


# -- rendering -----------------------------------------------------------------------------


def test_rendering_helpers() -> None:
    assert [format_age(s) for s in (None, -1, 4.25, 63, 3725, 2 * 86400 + 3 * 3600)] == [
        "-",
        "0.0s",
        "4.2s",
        "1m03s",
        "1h02m",
        "2d03h",
    ]
    assert format_ms(0.0004) == "0.40 ms"
    assert format_ms(0.25) == "250 ms"
    assert format_ms(2.5) == "2.50 s"
    assert clip("a\nb", 10) == "a b"
    assert clip("x" * 20, 10) == "xxxxxxx..."
    assert (
        format_details({"peer": ("127.0.0.1", 80), "n": {"a": 1}}) == "peer=127.0.0.1:80 n={a=1}"
    )
    assert table(("PID", "NAME"), [("1", "a"), ("100", "bb")]) == "PID  NAME\n  1  a\n100  bb"


async def test_await_chain_follows_coroutines() -> None:
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def outer() -> None:
        await inner()

    task = asyncio.get_running_loop().create_task(outer())
    await asyncio.sleep(0)
    frames, awaiting = await_chain(task.get_coro())
    assert [f.f_code.co_name for f in frames] == ["outer", "inner", "sleep"]
    assert awaiting is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- hand-offs to the app loop ----------------------------------------------------------------


async def test_apploop_outcomes() -> None:
    app_loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_app() -> None:
        asyncio.set_event_loop(app_loop)
        app_loop.call_soon(ready.set)
        app_loop.run_forever()

    thread = threading.Thread(target=run_app)
    thread.start()
    ready.wait()
    bridge = AppLoop(app_loop, ProcessManager())
    try:
        done = await bridge.run(lambda: threading.get_ident())
        assert done.status is Status.DONE and done.value == thread.ident
        failed = await bridge.run(lambda: 1 / 0)
        assert failed.status is Status.FAILED
        assert isinstance(failed.error, ZeroDivisionError)
        slow = await bridge.run(lambda: asyncio.sleep(0.5), finish_timeout=0.01)
        assert slow.status is Status.RUNNING
        cancelled = await bridge.run(lambda: asyncio.sleep(3600), finish_timeout=0.01)
        assert cancelled.status is Status.RUNNING
        # Block the app loop: the next call is queued, and runs later.
        release = threading.Event()
        app_loop.call_soon_threadsafe(release.wait)
        ran = threading.Event()
        queued = await bridge.run(ran.set, start_timeout=0.05)
        assert queued.status is Status.QUEUED
        bridge.probe()
        await asyncio.sleep(0.05)
        assert bridge.blocked_for >= 0.04
        release.set()
        await asyncio.to_thread(ran.wait, 5)
        assert ran.is_set()
        await asyncio.sleep(0.05)
        assert bridge.blocked_for == 0.0 and bridge.thread_id == thread.ident
        assert bridge.lag_stats(60)[2] == 1
    finally:

        async def cancel_pending() -> None:
            for task in list(bridge._pending):
                task.cancel()
            await asyncio.gather(*bridge._pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_pending(), app_loop).result(5)
        app_loop.call_soon_threadsafe(app_loop.stop)
        thread.join()
        app_loop.close()
    closed = await bridge.run(lambda: None)
    assert closed.status is Status.CLOSED
    bridge.probe()
    assert bridge._closed


async def test_pacer_rests_after_a_stretch_of_work() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(work=0.0, rest=0.05)
    started = loop.time()
    await asyncio.gather(pacer.pace(), pacer.pace())  # two sessions share one rest
    assert loop.time() - started >= 0.04
    relaxed = Pacer(work=3600.0, rest=3600.0)
    async with asyncio.timeout(10):  # no rest before it has worked an hour
        for _ in range(100):
            await relaxed.pace()


def test_short_gil_slices_nest_and_restore_the_switch_interval() -> None:
    import sys

    from archangel.console.fairness import _GIL_SLICE, short_gil_slices

    before = sys.getswitchinterval()
    with short_gil_slices():
        assert sys.getswitchinterval() == _GIL_SLICE
        with short_gil_slices():  # a second command, in another session
            assert sys.getswitchinterval() == _GIL_SLICE
        assert sys.getswitchinterval() == _GIL_SLICE  # still one running
    assert sys.getswitchinterval() == before
    try:
        with short_gil_slices():
            raise RuntimeError("a failing command")
    except RuntimeError:
        pass
    assert sys.getswitchinterval() == before


def test_a_forked_child_starts_with_no_short_gil_slices_and_a_free_lock() -> None:
    # A worker forked while a console session (or the web server) holds the
    # 1 ms interval must not keep it, nor a count that never falls to zero.
    import os
    import sys

    from archangel.console import fairness

    before = sys.getswitchinterval()
    read, write = os.pipe()
    with fairness.short_gil_slices():
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's exit
            try:
                with fairness.short_gil_slices():  # the lock is free, the count starts at 0
                    pass
                os.write(write, f"{sys.getswitchinterval()} {fairness._slices_depth}".encode())
            finally:
                os._exit(0)
        os.close(write)
        answer = os.read(read, 100).decode()
        os.close(read)
        os.waitpid(pid, 0)
    interval, depth = answer.split()
    assert float(interval) == before
    assert int(depth) == 0
