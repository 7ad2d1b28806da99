"""Shared test setup: every async test runs on the default loop and on uvloop.

Set ``ARCHANGEL_TEST_LOOP=asyncio`` (or ``uvloop``) to run on one loop only.

A test that asks for the ``clock`` fixture runs instead on a
:class:`VirtualClockLoop` (asyncio's default loop only, see there): time stands
still until the test moves it with ``await clock.advance(seconds)``.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

from archangel import App
from archangel.bus.bus import Bus
from archangel.bus.states import State
from tests.browser_helpers import browser  # noqa: F401  (a fixture: the dashboard's tests)
from tests.service_helpers import run  # noqa: F401  (a fixture: test_daemon.py, test_pidfile.py)

_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """asyncio's default loop on a clock that only the test moves.

    :meth:`time` starts at :data:`START` and changes only through
    :meth:`advance` (which runs the callbacks that come due on the way, each
    at its due time) and :meth:`stall` (a loop blocked by work: the clock moves
    and nothing runs). So timers, ``asyncio.sleep`` and ``asyncio.timeout``
    behave as on a real clock, deterministically and without waiting.

    asyncio's default (selector) loop only: it reads the loop's ``_ready`` and
    ``_scheduled`` queues, which uvloop does not have (its clock is in C).
    A test on it must wait by advancing, not by sleeping: a sleep that the
    clock never reaches parks the test until pytest-timeout ends it. Real I/O
    (sockets, subprocesses) still works, at real speed.
    """

    #: The clock's reading when the loop is made (far from 0 and from ``time.time()``).
    START = 10_000.0

    def __init__(self) -> None:
        super().__init__()
        self._now = self.START

    def time(self) -> float:
        """The virtual now."""
        return self._now

    def stall(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` without running anything, as blocking work would.

        Call it from a callback (work that takes ``seconds``) or from the
        test; what came due meanwhile runs late, at the next yield to the loop.
        """
        assert seconds >= 0, seconds
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, running what comes due on the way, in order.

        Each timed callback runs with the clock at its deadline, and
        everything it makes ready runs before the clock moves again. Returns
        once nothing is ready at the new time.
        """
        assert seconds >= 0, seconds
        target = self._now + seconds
        await self.settle()
        while (due := self._next_due()) is not None and due <= target:
            self._now = max(self._now, due)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()

    async def settle(self) -> None:
        """Let the loop run what is ready now until nothing is; the clock stays."""
        for _ in range(100_000):
            await asyncio.sleep(0)
            due = self._next_due()
            if not self._ready and (due is None or due > self._now):  # type: ignore[attr-defined]
                return
        raise AssertionError("the loop never settles: something reschedules itself at once")

    def _next_due(self) -> float | None:
        scheduled = self._scheduled  # type: ignore[attr-defined]
        whens = [handle.when() for handle in scheduled if not handle.cancelled()]
        return min(whens) if whens else None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if "clock" in getattr(item, "fixturenames", ()):
        return {"virtual": VirtualClockLoop}
    only = os.environ.get("ARCHANGEL_TEST_LOOP")
    if only:
        return {only: _LOOPS[only]}
    return _LOOPS


def pytest_configure(config: pytest.Config) -> None:
    # Tests open a few thousand sockets at once; lift the soft fd limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 65536:
        hard = 65536
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture
async def bus() -> AsyncIterator[Bus[State]]:
    """A fresh lifecycle :class:`~archangel.bus.Bus`, closed after the test."""
    bus = Bus()
    yield bus
    bus.close()


@pytest.fixture
async def clock() -> VirtualClockLoop:
    """The running :class:`VirtualClockLoop`: a test asking for it runs on one."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop), loop
    return loop


@pytest.fixture
async def running() -> AsyncIterator[Any]:
    """Start an App (made by the test with the returned function) and stop it after."""
    apps: list[tuple[App, asyncio.Future[int]]] = []

    async def start(app: App) -> App:
        task = asyncio.ensure_future(app.main())
        apps.append((app, task))
        await app.bus.wait(State.RUN, State.EXITED)
        assert app.bus.state is State.RUN
        return app

    yield start
    for app, task in apps:
        if not task.done():
            app.request_stop(quick=True)
        await task
