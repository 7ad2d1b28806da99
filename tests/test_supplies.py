"""Supplies: tail (real files, rotations, truncations), lines, every.

The line server's tests are in test_line_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archangel import ExitReason, InvalidArgument
from archangel.pipes.pipeline import Pipeline
from archangel.pipes.supplies import (
    FileLine,
    LineBuffer,
    Tail,
    Tails,
    every,
    lines,
    tail,
)
from archangel.pipes.watch import Watcher, inotify_available
from tests.helpers import until

INTERVAL = 0.005


@pytest.fixture(params=["inotify", "polling"])
async def watcher(request: pytest.FixtureRequest) -> AsyncIterator[Watcher]:
    if request.param == "inotify" and not inotify_available():
        pytest.skip("no inotify here")
    async with Watcher(polling=request.param == "polling", interval=INTERVAL) as w:
        yield w


class Follow:
    """Runs a pipeline over a tail; lines arrive on a queue the test awaits."""

    def __init__(self, supply: Tail | Tails) -> None:
        self.supply = supply
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.pipeline = Pipeline(supply, sink=self.queue.put_nowait, name="follow")

    async def __aenter__(self) -> Follow:
        self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()
        assert self.pipeline.exit_reason is ExitReason.SHUTDOWN

    async def expect(self, *expected: Any) -> None:
        async with asyncio.timeout(5):
            got = [await self.queue.get() for _ in expected]
        assert got == list(expected)
        assert self.queue.empty()

    async def settled(self) -> None:
        """The tail has caught up: it is waiting on its watch again."""
        await until(lambda: self.pipeline._reading)
        supply = self.supply
        if isinstance(supply, Tails):  # and each file's reader watches its directory
            await until(lambda: all(one._watches for one in supply.tails))


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


# -- tail -------------------------------------------------------------------------------


async def test_tail_follows_appends_from_the_end_and_holds_partial_lines(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("old 1\nold 2\n")
    async with Follow(tail(log, watcher=watcher)) as follow:
        await follow.settled()
        append(log, "new 1\nnew 2\npart")
        await follow.expect("new 1", "new 2")
        append(log, "ial\r\n")
        await follow.expect("partial")


async def test_tail_from_start_and_starting_inside_a_partial_line(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("a\nb\n")
    async with Follow(tail(log, from_start=True, watcher=watcher)) as follow:
        await follow.expect("a", "b")
    log.write_text("done\nhalf a li")
    async with Follow(tail(log, watcher=watcher)) as follow:
        await follow.settled()
        append(log, "ne\n")
        await follow.expect("half a line")  # started at the line, not in its middle


async def test_tail_waits_for_a_missing_file_and_reads_it_from_its_start(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "later.log"
    async with Follow(tail(log, watcher=watcher)) as follow:
        await follow.settled()
        log.write_text("first\nsecond\n")
        await follow.expect("first", "second")


async def test_tail_survives_rename_rotation_without_losing_lines(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    follow = Follow(tail(log, watcher=watcher, rotated_grace=0.2))
    async with follow:
        await follow.settled()
        with log.open("a", buffering=1) as old:
            old.write("before 1\nbefore 2\n")
            await follow.expect("before 1", "before 2")
            os.rename(log, tmp_path / "app.log.1")
            old.write("late 1\n")  # the writer has not reopened yet
            await asyncio.sleep(0.01)  # whether or not the tail saw the rename by now
            old.write("late 2\nunterminated")
        log.write_text("fresh 1\nfresh 2\n")
        # The old file's unterminated line comes once it has been quiet 0.2 s.
        await follow.expect("late 1", "late 2", "fresh 1", "fresh 2", "unterminated")
        assert follow.supply.rotations == 1
        # and a second rotation, this time renaming a new file over the old name
        (tmp_path / "next").write_text("next 1\n")
        os.rename(tmp_path / "next", log)
        await follow.expect("next 1")
        assert follow.supply.rotations == 2


async def test_tail_reads_a_rotated_file_until_its_writer_reopens(
    watcher: Watcher, tmp_path: Path
) -> None:
    # logrotate's "create": rename, create the new file at once, and the daemon
    # writes to the old one until it is told (SIGHUP) to reopen its log.
    log = tmp_path / "app.log"
    log.write_text("")
    follow = Follow(tail(log, watcher=watcher, rotated_grace=0.3))
    async with follow:
        await follow.settled()
        with log.open("a", buffering=1) as old:
            old.write("before\n")
            await follow.expect("before")
            os.rename(log, tmp_path / "app.log.1")
            log.write_text("")
            await until(lambda: follow.supply.rotations == 1)  # following the new file
            old.write("late, before the daemon reopens\n")
            await follow.expect("late, before the daemon reopens")
        append(log, "fresh\n")
        await follow.expect("fresh")


async def test_tail_survives_copy_truncate(watcher: Watcher, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    follow = Follow(tail(log, watcher=watcher))
    async with follow:
        await follow.settled()
        with log.open("a", buffering=1) as writer:  # O_APPEND, as loggers write
            writer.write("a long line before the rotation\nanother one\n")
            await follow.expect("a long line before the rotation", "another one")
            shutil.copy(log, tmp_path / "app.log.1")
            os.truncate(log, 0)
            writer.write("after\n")
            await follow.expect("after")
            writer.write("and more\n")
            await follow.expect("and more")
        assert follow.supply.truncations == 1 and follow.supply.rotations == 0


async def test_tail_notices_a_truncation_the_file_outgrew_and_drops_a_partial_line(
    watcher: Watcher, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    follow = Follow(tail(log, watcher=watcher))
    async with follow:
        await follow.settled()
        with log.open("a", buffering=1) as writer:
            writer.write("x1\npart")
            await follow.expect("x1")
            await follow.settled()
            # Truncated, then written past the old position before the tail looks.
            os.truncate(log, 0)
            writer.write("new line 1\nnew line 2\n")
            await follow.expect("new line 1", "new line 2")
        assert follow.supply.truncations == 1


async def test_tail_closes_its_own_watcher_and_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    before = set(os.listdir("/proc/self/fd"))
    supply = tail(log, from_start=True)
    async with Follow(supply) as follow:
        await follow.expect("x")
        assert len(set(os.listdir("/proc/self/fd")) - before) >= 1
    assert set(os.listdir("/proc/self/fd")) - before == set()
    assert "rotations=0" in repr(supply)


async def test_tail_async_for_one_line_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"\xff\n2\n")
    got = []
    async with Watcher(polling=True) as watcher:
        async with contextlib.aclosing(aiter(tail(log, True, watcher))) as follow:
            async for line in follow:
                got.append(line)
                if len(got) == 2:
                    break
        assert "watches=0" in repr(watcher)  # the tail removed its watch
    assert got == ["\ufffd", "2"]


# -- lines, LineBuffer --------------------------------------------------------------------


def test_line_buffer_splits_holds_and_cuts() -> None:
    buf = LineBuffer(max_line=8)
    assert buf.feed(b"a\r\nb\npar") == ["a", "b"]
    assert buf.partial == b"par"
    assert buf.feed(b"tial\n") == ["partial"]
    assert buf.feed(b"0123456789") == ["0123456789"]  # longer than max_line: cut
    assert buf.feed(b"x") == [] and buf.flush() == ["x"] and buf.flush() == []
    raw = LineBuffer(encoding=None)
    assert raw.feed(b"\xff\r\n") == [b"\xff"]
    with pytest.raises(ValueError, match="max_line"):
        LineBuffer(max_line=0)


# -- tail of several files ------------------------------------------------------------------


async def test_tail_follows_several_files_each_through_its_own_rotation(
    watcher: Watcher, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("old a\n")
    b.write_text("old b\n")
    supply = tail([a, b], watcher=watcher, rotated_grace=0.2, with_path=True)
    assert isinstance(supply, Tails) and supply.paths == [str(a), str(b)]
    async with Follow(supply) as follow:
        await follow.settled()
        append(a, "a 1\n")
        await follow.expect(FileLine(str(a), "a 1"))
        append(b, "b 1\n")
        await follow.expect(FileLine(str(b), "b 1"))
        with a.open("a", buffering=1) as old:
            os.rename(a, tmp_path / "a.log.1")  # rotate a, not b
            old.write("a late\n")  # a's writer has not reopened yet
            a.write_text("a fresh\n")
            append(b, "b 2\n")
            got = [await asyncio.wait_for(follow.queue.get(), 5) for _ in range(3)]
        # Interleaved as they came; each file's lines in their order.
        assert sorted(got) == sorted(
            [FileLine(str(a), "a late"), FileLine(str(a), "a fresh"), FileLine(str(b), "b 2")]
        )
        assert got.index(FileLine(str(a), "a late")) < got.index(FileLine(str(a), "a fresh"))
        await until(lambda: supply.tails[0].rotations == 1)
        append(a, "a 2\n")
        append(b, "b 3\n")
        got = [await asyncio.wait_for(follow.queue.get(), 5) for _ in range(2)]
        assert sorted(got) == [FileLine(str(a), "a 2"), FileLine(str(b), "b 3")]
        assert [one.rotations for one in supply.tails] == [1, 0]
        assert supply.rotations == 1 and "rotations=1" in repr(supply)


async def test_tail_of_several_files_yields_plain_lines_and_waits_for_missing_ones(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.log", tmp_path / "later.log"
    a.write_text("")
    async with Follow(tail([a, b])) as follow:  # its own watcher, shared by both files
        await follow.settled()
        append(a, "from a\n")
        await follow.expect("from a")
        b.write_text("from b, from its start\n")
        await follow.expect("from b, from its start")
    assert follow.pipeline.counters["in"] == 2


async def test_a_single_file_tail_tagged_with_its_path(tmp_path: Path) -> None:
    log = tmp_path / "one.log"
    log.write_text("x\n")
    supply = tail(log, True, with_path=True)
    assert isinstance(supply, Tails)
    async with Follow(supply) as follow:
        await follow.expect(FileLine(str(log), "x"))
    assert isinstance(tail(log), Tail)


def test_a_tail_of_no_file_or_of_one_file_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no file to follow"):
        tail([])
    with pytest.raises(InvalidArgument, match="given twice"):
        tail([tmp_path / "a", str(tmp_path / "a")])
    with pytest.raises(InvalidArgument, match=r"several files go in one list: tail\(\[a, b\]\)"):
        tail(tmp_path / "a", tmp_path / "b")  # type: ignore[call-overload]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_killed_tail_of_several_files_releases_every_watch_and_file(
    tmp_path: Path,
) -> None:
    paths = [tmp_path / f"{n}.log" for n in range(3)]
    for path in paths:
        path.write_text("line\n")
    before = _open_fds()
    supply = tail(paths, from_start=True)
    seen: list[str] = []
    pipeline = Pipeline(supply, sink=seen.append)
    pipeline.start()
    await until(lambda: len(seen) == 3 and all(one._watches for one in supply.tails))
    assert _open_fds() > before  # the files, and one inotify fd (or none when polling)
    pipeline.kill()
    await pipeline.wait()
    assert pipeline.exit_reason is ExitReason.KILLED
    assert _open_fds() == before
    assert all(not one._watches for one in supply.tails)


async def test_one_file_failing_ends_a_tail_of_several_with_its_error(tmp_path: Path) -> None:
    if not inotify_available():
        pytest.skip("a removed directory is noticed through inotify here")
    (tmp_path / "kept").mkdir()
    (tmp_path / "gone").mkdir()
    kept, gone = tmp_path / "kept" / "a.log", tmp_path / "gone" / "b.log"
    kept.write_text("")
    seen: list[str] = []
    supply = tail([kept, gone])
    pipeline = Pipeline(supply, sink=seen.append)
    pipeline.start()
    await until(lambda: all(one._watches for one in supply.tails))
    append(kept, "before\n")
    await until(lambda: seen == ["before"])
    shutil.rmtree(tmp_path / "gone")
    await pipeline.wait()
    assert pipeline.exit_reason is ExitReason.ERROR
    assert isinstance(pipeline.error, FileNotFoundError)
    assert "gone" in str(pipeline.error)


async def test_lines_of_a_stream_reader_in_batches() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"one\ntwo\nthr")
    reader.feed_data(b"ee\nfour")
    reader.feed_eof()
    batches = [batch async for batch in lines(reader).batches()]
    assert batches == [["one", "two", "three"], ["four"]]
    reader = asyncio.StreamReader()
    reader.feed_data(b"a\nb\n")
    reader.feed_eof()
    assert [line async for line in lines(reader)] == ["a", "b"]


# -- every ---------------------------------------------------------------------------------


async def test_every_ticks_on_the_loop_clock_without_drift_and_skips_missed_ticks() -> None:
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    async for due in every(0.01):
        ticks.append(due)
        assert loop.time() >= due - 0.001
        if len(ticks) == 3:
            await asyncio.sleep(0.035)  # a slow consumer misses three ticks
        if len(ticks) == 5:
            break
    steps = [round((b - a) / 0.01) for a, b in itertools.pairwise(ticks)]
    assert steps[:2] == [1, 1] and steps[2] >= 3 and steps[3] == 1
    start = ticks[0]
    assert all(abs((t - start) / 0.01 - round((t - start) / 0.01)) < 1e-6 for t in ticks)
    with pytest.raises(ValueError, match="seconds"):
        await anext(every(0))


async def test_every_immediately() -> None:
    loop = asyncio.get_running_loop()
    ticker = every(60, immediately=True)
    first = await anext(ticker)
    assert first <= loop.time()
    await ticker.aclose()


# -- max_line defaults -----------------------------------------------------------------------


def test_the_two_longest_line_defaults_have_names_of_their_own() -> None:
    import importlib
    import inspect

    from archangel.pipes import _lines, supplies

    line_server = importlib.import_module("archangel.pipes.line_server")

    assert _lines.MAX_STREAM_LINE == 1 << 20 and line_server._MAX_PEER_LINE == 1 << 16
    assert not hasattr(_lines, "MAX_LINE") and not hasattr(line_server, "MAX_LINE")
    for fn, default in [
        (supplies.tail, _lines.MAX_STREAM_LINE),
        (supplies.lines, _lines.MAX_STREAM_LINE),
        (_lines.LineBuffer, _lines.MAX_STREAM_LINE),
        (line_server.line_server, line_server._MAX_PEER_LINE),
        (line_server.LineServer, line_server._MAX_PEER_LINE),
    ]:
        assert inspect.signature(fn).parameters["max_line"].default == default


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        (123, {}, r"tail\(123\): give a path \(a str or an os.PathLike\) or a list of paths"),
        (None, {}, r"tail\(None\): give a path"),
        (b"/tmp/x.log", {}, r"tail\(b'/tmp/x.log'\): give a path"),
        ([1], {}, r"tail\(\): a path is a str or an os.PathLike, not 1"),
        ("/tmp/x.log", {"max_line": 0}, r"max_line must be >= 1 byte, got 0"),
        ("/tmp/x.log", {"rotated_grace": "1"}, r"rotated_grace must be a number of seconds"),
    ],
)
def test_tail_refuses_what_is_not_a_path_when_made(
    path: object, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        tail(path, **options)  # type: ignore[arg-type, call-overload]
