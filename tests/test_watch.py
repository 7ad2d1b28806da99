"""Watchers: inotify and polling, real files on tmp_path, one interface."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archangel.errors import WatcherClosed
from archangel.pipes import watch as watch_module
from archangel.pipes._watch_backends import Inotify, Polling
from archangel.pipes.watch import Change, Watch, Watcher, WatchEvent, inotify_available, wait_any
from tests.conftest import VirtualClockLoop
from tests.helpers import until

INTERVAL = 0.005

needs_inotify = pytest.mark.skipif(not inotify_available(), reason="no inotify here")


@pytest.fixture(params=["inotify", "polling"])
async def watcher(request: pytest.FixtureRequest) -> AsyncIterator[Watcher]:
    if request.param == "inotify" and not inotify_available():
        pytest.skip("no inotify here")
    async with Watcher(polling=request.param == "polling", interval=INTERVAL) as w:
        assert w.inotify is (request.param == "inotify")
        yield w


async def until_event(watch: Watch, *wanted: str | Change) -> list[WatchEvent]:
    """Read events until, for each ``name, change`` pair wanted, one has come; return all."""
    pairs = list(zip(wanted[::2], wanted[1::2], strict=True))
    seen: list[WatchEvent] = []
    async with asyncio.timeout(5):
        while not all(any(e.name == n and e.change & c for e in seen) for n, c in pairs):
            seen.extend(await watch.wait())
    return seen


async def test_directory_watch_sees_create_modify_delete(watcher: Watcher, tmp_path: Path) -> None:
    watch = watcher.add(tmp_path)
    assert watch.is_dir and watch.path == str(tmp_path)
    target = tmp_path / "a.log"
    target.write_text("one\n")
    await until_event(watch, "a.log", Change.CREATED | Change.MODIFIED)
    with target.open("a") as f:
        f.write("two\n")
    await until_event(watch, "a.log", Change.MODIFIED)
    target.unlink()
    events = await until_event(watch, "a.log", Change.DELETED)
    assert all(e.path == str(tmp_path) for e in events)


async def test_directory_watch_sees_renames(watcher: Watcher, tmp_path: Path) -> None:
    (tmp_path / "old").write_text("x")
    watch = watcher.add(tmp_path)
    os.rename(tmp_path / "old", tmp_path / "new")
    # inotify names both ends of a move; polling sees one entry go, one come.
    await until_event(
        watch, "old", Change.MOVED_FROM | Change.DELETED, "new", Change.MOVED_TO | Change.CREATED
    )


async def test_file_watch_sees_modification(watcher: Watcher, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    watch = watcher.add(target)
    assert not watch.is_dir
    target.write_text("more")
    events = await until_event(watch, "", Change.MODIFIED)
    assert events[-1].path == str(target)


async def test_close_ends_waits_and_refuses_new_watches(watcher: Watcher, tmp_path: Path) -> None:
    watch = watcher.add(tmp_path)
    waiting = asyncio.ensure_future(watch.wait())
    await asyncio.sleep(0)
    watcher.close()
    with pytest.raises(WatcherClosed, match="closed"):
        await waiting
    assert watch.closed and watcher.closed
    with pytest.raises(WatcherClosed):
        watcher.add(tmp_path)
    assert [batch async for batch in watch] == []
    watcher.close()  # idempotent


async def test_watch_close_removes_only_that_watch(watcher: Watcher, tmp_path: Path) -> None:
    first = watcher.add(tmp_path)
    second = watcher.add(tmp_path)
    first.close()
    first.close()
    (tmp_path / "x").write_text("x")
    await until_event(second, "x", Change.CREATED | Change.MODIFIED)
    assert first.pending() == []
    assert "watches=1" in repr(watcher)


async def test_missing_path_is_an_error(watcher: Watcher, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        watcher.add(tmp_path / "nope")


async def test_events_beyond_the_bound_collapse_into_overflow(
    watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "MAX_PENDING", 3)
    watch = watcher.add(tmp_path)
    for n in range(5):
        (tmp_path / f"f{n}").write_text("x")
    events = await until_event(watch, "", Change.OVERFLOW)  # nobody read: the queue filled
    assert len(events) <= 3


def test_watcher_constructor_does_no_io() -> None:
    w = Watcher()  # no loop running, nothing opened
    assert w.inotify is inotify_available()
    assert Watcher(polling=True).inotify is False
    with pytest.raises(ValueError, match="interval"):
        Watcher(interval=0)
    w.close()


@needs_inotify
async def test_inotify_fd_is_removed_from_the_loop_and_closed(tmp_path: Path) -> None:
    watcher = Watcher()
    watcher.add(tmp_path)
    fd = watcher._backend._fd  # type: ignore[union-attr]
    os.fstat(fd)
    loop = asyncio.get_running_loop()
    watcher.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert not loop.remove_reader(fd)  # nothing left registered


@needs_inotify
async def test_inotify_watch_ends_when_the_kernel_drops_it(tmp_path: Path) -> None:
    target = tmp_path / "gone"
    target.write_text("")
    async with Watcher() as watcher:
        watch = watcher.add(target)
        target.unlink()
        events = [e async for batch in watch for e in batch]  # ends with the watch
        assert Change.SELF_DELETED in Change(sum(e.change.value for e in events))
        assert watch.closed


@needs_inotify
async def test_a_file_watch_sees_writes_to_the_file_once_it_is_deleted(tmp_path: Path) -> None:
    # A daemon goes on writing to its log after logrotate compressed and deleted it.
    target = tmp_path / "app.log"
    async with Watcher() as watcher:
        with target.open("a", buffering=1) as writer:
            watch = watcher.add(target)
            target.unlink()
            await until_event(watch, "", Change.ATTRIB)  # the link count dropped
            writer.write("still written\n")
            await until_event(watch, "", Change.MODIFIED)


async def test_wait_any_wakes_on_any_of_its_watches(watcher: Watcher, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = watcher.add(tmp_path / "a"), watcher.add(tmp_path / "b")
    waiting = asyncio.ensure_future(wait_any([first, second]))
    await asyncio.sleep(0)
    (tmp_path / "b" / "x").write_text("x")
    async with asyncio.timeout(5):
        events = await waiting
    assert events and {e.path for e in events} == {str(tmp_path / "b")}
    assert first._waiters == [] and second._waiters == []  # nothing left behind
    second.close()
    assert await wait_any([first, second]) == []  # a closed watch ends the wait


async def test_a_wait_that_times_out_leaves_nothing_behind(
    watcher: Watcher, tmp_path: Path
) -> None:
    watch = watcher.add(tmp_path)
    for _ in range(20):  # a tail looking again every 0.1 s at a quiet directory
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await watch.wait()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await wait_any([watch])
    assert watch._waiters == []


async def test_polls_keep_their_grid_after_a_stall(
    tmp_path: Path, clock: VirtualClockLoop
) -> None:
    """The polling watcher runs on the bus's Timer: a late poll, then the grid, no burst."""
    async with Watcher(polling=True, interval=1.0) as watcher:
        watch = watcher.add(tmp_path)  # polls due at 1, 2, 3, ... from now
        await clock.advance(1.0)
        assert watch.pending() == []
        clock.stall(2.5)  # blocked from 1.0 to 3.5: the polls due at 2 and 3 are late
        (tmp_path / "a").write_text("a")
        await clock.advance(0)
        assert [(e.name, e.change) for e in watch.pending()] == [("a", Change.CREATED)]
        (tmp_path / "b").write_text("b")
        await clock.advance(0.49)
        assert watch.pending() == []  # the late poll was the one due at 2; 3 was skipped
        await clock.advance(0.01)  # 4.0: on the grid, not one interval after the late poll
        assert [(e.name, e.change) for e in watch.pending()] == [("b", Change.CREATED)]


async def test_a_backend_speaks_only_through_the_callbacks_it_is_handed(
    tmp_path: Path,
) -> None:
    """A backend changes no watch itself: it calls ``deliver`` and ``dropped``."""
    loop = asyncio.get_running_loop()
    delivered: list[tuple[Watch, WatchEvent]] = []
    dropped: list[Watch] = []
    owner = Watcher()  # only names the watches' owner; its own backend is never started
    (tmp_path / "d").mkdir()
    polled = Watch(owner, str(tmp_path), True)
    backends: list[Any] = [Polling(loop, INTERVAL, lambda w, e: delivered.append((w, e)))]
    backends[0].add(polled)
    watched = Watch(owner, str(tmp_path / "d"), True)
    if inotify_available():
        backends.append(Inotify(loop, lambda w, e: delivered.append((w, e)), dropped.append))
        backends[1].add(watched)
    try:
        (tmp_path / "c").write_text("c")
        (tmp_path / "d").rmdir()
        await until(lambda: (polled, WatchEvent(str(tmp_path), "c", Change.CREATED)) in delivered)
        if inotify_available():
            await until(lambda: dropped == [watched])
        assert polled.pending() == [] and watched.pending() == []  # nothing queued behind
        assert not polled.closed and not watched.closed  # closing is the Watcher's call
    finally:
        for backend in backends:
            backend.close()
