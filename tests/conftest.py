"""Shared test setup: every async test runs on the default loop and on uvloop.

Set ``ARCHANGEL_TEST_LOOP=asyncio`` (or ``uvloop``) to run on one loop only.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from archangel.bus.bus import Bus
from archangel.bus.states import State

_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
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
