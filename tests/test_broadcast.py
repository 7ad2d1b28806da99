"""Tests for archangel.pipes._broadcast: ``Pipeline.notify`` reaching the parts of a train."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from archangel import ExitReason, InvalidArgument
from archangel.pipes.cogs import Cog, concurrent
from archangel.pipes.pipeline import Pipeline
from tests.helpers import until
from tests.test_pipeline import Recorder, forever


class Stash(Cog):
    """Keeps a resource per event id until the event is finished; follows renames."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.resources: dict[Any, list[Any]] = {}

    def __call__(self, item: dict[str, Any]) -> tuple[dict[str, Any]]:
        self.resources[item["id"]] = [f"buffer of {item['id']}"]
        return (item,)

    def event_renamed(self, old: Any, new: Any) -> None:
        self.log.append(f"stash renamed {old}->{new}")
        self.resources.setdefault(new, []).extend(self.resources.pop(old))

    def event_finished(self, event_id: Any) -> None:
        self.log.append(f"stash finished {event_id}")
        del self.resources[event_id]


class Pair(Cog):
    """Merges items two by two into one event under a new id (and says so)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.first: dict[str, Any] | None = None

    def __call__(self, item: dict[str, Any]) -> tuple[dict[str, Any]] | None:
        if self.first is None:
            self.first = item
            return None
        first, self.first = self.first, None
        merged = {"id": f"{first['id']}+{item['id']}", "parts": [first["id"], item["id"]]}
        for part in merged["parts"]:
            self.notify("event_renamed", part, merged["id"])
        return (merged,)

    def event_finished(self, event_id: Any) -> None:
        self.log.append(f"pair finished {event_id}")


class Supply:
    """An iterable supply that hears notifications too (deadbeat's supplies are cogs)."""

    def __init__(self, n: int, log: list[str]) -> None:
        self.n = n
        self.log = log

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter([{"id": i} for i in range(self.n)])

    def event_finished(self, event_id: Any) -> None:
        self.log.append(f"supply finished {event_id}")


async def test_notify_reaches_supply_cogs_and_sink_in_train_order() -> None:
    log: list[str] = []
    stash, pair = Stash(log), Pair(log)
    pipeline: Pipeline

    class Store:
        def __init__(self) -> None:
            self.stored: list[Any] = []

        def __call__(self, item: dict[str, Any]) -> None:
            self.stored.append(item["id"])
            assert pipeline.notify("event_finished", item["id"]) == 4

        def event_finished(self, event_id: Any) -> None:
            log.append(f"sink finished {event_id}")

    store = Store()
    pipeline = Pipeline(Supply(4, log), stash, pair, sink=store, name="pairs")
    assert stash.pipeline is pipeline and pair.pipeline is pipeline
    await pipeline.run()
    assert store.stored == ["0+1", "2+3"]
    assert log == [
        "stash renamed 0->0+1",
        "stash renamed 1->0+1",
        "stash renamed 2->2+3",
        "stash renamed 3->2+3",
        "supply finished 0+1",
        "stash finished 0+1",
        "pair finished 0+1",
        "sink finished 0+1",
        "supply finished 2+3",
        "stash finished 2+3",
        "pair finished 2+3",
        "sink finished 2+3",
    ]
    assert stash.resources == {}  # every per-event resource was released
    assert pipeline.notify_failed == 0
    assert pipeline.notify("event_finished", "late") == 0  # ended: nobody is called
    assert log[-1] == "sink finished 2+3"


async def test_a_failing_or_async_handler_is_logged_and_counted_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    class Fragile(Cog):
        def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

        def event_finished(self, event_id: Any) -> None:
            calls.append("fragile")
            raise KeyError(event_id)

    class Eager(Cog):
        async def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

        async def event_finished(self, event_id: Any) -> None:  # not allowed: handlers are sync
            calls.append("never")

    class Steady(Cog):
        def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

        def event_finished(self, event_id: Any) -> None:
            calls.append(f"steady {event_id}")

    caplog.set_level(logging.ERROR)
    pipeline = Pipeline(forever([]), Fragile(), concurrent(Eager(), 2), Steady(), name="frail")
    pipeline.start()
    await until(lambda: pipeline._reading)
    assert pipeline.notify("event_finished", "ev-7") == 1
    assert calls == ["fragile", "steady ev-7"]
    assert pipeline.notify_failed == 2
    assert pipeline.details()["notify_failed"] == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("ev-7: event_finished() of cog Fragile of pipeline frail")
    assert "raised KeyError('ev-7')" in lines[0]
    assert lines[1].startswith("ev-7: event_finished() of cog Eager of pipeline frail")
    assert "is async: notification handlers are sync" in lines[1]
    await pipeline.stop()
    assert pipeline.exit_reason is ExitReason.SHUTDOWN


def test_notify_refuses_the_names_the_pipeline_calls_itself() -> None:
    pipeline = Pipeline([], Recorder("a", []))
    for name in ("finish", "done", "release", "close", "_private", "not a name"):
        with pytest.raises(InvalidArgument, match="cannot notify"):
            pipeline.notify(name)
    assert pipeline.notify("nobody_has_this") == 0
