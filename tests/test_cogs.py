"""Cog helpers: getters, setters, ids, names, the Cog base. Pure: no loop."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest

from archangel import InvalidArgument, ProcessStateError
from archangel.pipes.cogs import (
    Cog,
    attrgetter,
    attrsetter,
    cog_name,
    concurrent,
    default_id,
    itemgetter,
    itemsetter,
    keep,
    mapper,
)
from archangel.pipes.pipeline import Pipeline


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Frozen:
    id: int
    tag: str = ""


@dataclasses.dataclass
class Loose:
    tag: str = ""


def test_itemgetter_with_and_without_default() -> None:
    assert itemgetter("a")({"a": 1}) == 1
    with pytest.raises(KeyError):
        itemgetter("a")({})
    assert itemgetter("a", None)({}) is None
    assert itemgetter(5, "none")([1]) == "none"


def test_itemsetter_returns_the_item_mutable_in_place_immutable_copied() -> None:
    item = {"a": 1}
    assert itemsetter("b")(item, 2) is item and item == {"a": 1, "b": 2}
    row = [1, 2]
    assert itemsetter(0)(row, 9) is row and row == [9, 2]
    assert itemsetter(1)((1, 2), 3) == (1, 3)
    assert itemsetter("y")(Point(1, 2), 5) == Point(1, 5)
    assert itemsetter(0)(Point(1, 2), 5) == Point(5, 2)
    frozen = MappingProxyType({"a": 1})
    assert itemsetter("a")(frozen, 2) == {"a": 2} and frozen["a"] == 1
    with pytest.raises(TypeError, match="itemsetter"):
        itemsetter("a")(object(), 1)


def test_attrgetter_and_attrsetter_work_on_frozen_dataclasses_and_named_tuples() -> None:
    frozen = Frozen(1)
    changed = attrsetter("tag")(frozen, "x")
    assert changed == Frozen(1, "x") and frozen.tag == ""
    assert attrsetter("x")(Point(1, 2), 7) == Point(7, 2)
    loose = Loose()
    assert attrsetter("tag")(loose, "y") is loose and loose.tag == "y"
    assert attrgetter("tag")(loose) == "y"
    assert attrgetter("nope", 0)(loose) == 0


def test_default_id_prefers_an_id_then_a_short_repr() -> None:
    assert default_id({"id": "abc"}) == "abc"
    assert default_id(Frozen(7)) == 7
    assert default_id({"x": 1}) == "{'x': 1}"
    long = default_id("y" * 500)
    assert isinstance(long, str) and len(long) < 60


def test_cog_names_and_repr() -> None:
    class Enrich(Cog):
        def __init__(self, field: str) -> None:
            self.field = field
            self._cache: dict[str, str] = {}

        def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

    def parse(line: str) -> tuple[str]:
        return (line,)

    async def fetch(item: Any) -> tuple[Any]:
        return (item,)

    assert repr(Enrich("ip")) == "Enrich(field='ip')"
    assert cog_name(Enrich("ip")) == "Enrich"
    assert cog_name(parse) == "parse"
    assert cog_name(concurrent(fetch, limit=2)) == "fetch"
    assert cog_name(mapper(str.upper)) == "mapper(str.upper)"
    assert repr(concurrent(fetch, limit=2)).endswith("limit=2)")


def test_cog_base_defaults_hold_nothing() -> None:
    cog = Cog()
    assert cog.finish() is None and cog.done() is None and cog.concurrency == 1


def test_mapper_and_keep_follow_the_contract() -> None:
    assert mapper(lambda x: x + 1)(1) == (2,)
    assert keep(lambda x: x > 1)(1) is None
    assert keep(lambda x: x > 1)(2) == (2,)


def test_concurrent_accepts_async_and_async_generator_cogs_only() -> None:
    async def fetch(item: Any) -> tuple[Any]:
        return (item,)

    async def expand(item: Any) -> AsyncIterator[Any]:
        yield item

    class Remote(Cog):
        async def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

        def done(self) -> None:
            self.closed = True

    assert concurrent(expand, limit=1)
    remote = Remote()
    wrapped: Any = concurrent(remote, limit=4)
    assert wrapped.concurrency == 4
    wrapped.done()
    assert remote.closed
    assert wrapped.finish() is None
    with pytest.raises(InvalidArgument, match="limit must be >= 1"):
        concurrent(fetch, limit=0)
    with pytest.raises(InvalidArgument, match="only an async cog"):
        concurrent(lambda item: (item,))


def test_a_cog_knows_its_pipeline_only_once_in_one() -> None:
    class Lone(Cog):
        def __init__(self, size: int) -> None:
            self.size = size

        def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

    lone = Lone(3)
    with pytest.raises(ProcessStateError, match=r"Lone\(size=3\) is not in a pipeline yet"):
        lone.pipeline  # noqa: B018
    with pytest.raises(ProcessStateError):
        lone.notify("event_finished", 1)
    assert lone.release(0.0) is None and lone.release_every is None
    pipeline = Pipeline([], lone)
    assert lone.pipeline is pipeline
    assert repr(lone) == "Lone(size=3)"  # the pipeline is not one of its arguments


def test_concurrent_forwards_handlers_and_release_to_the_wrapped_cog() -> None:
    class Timed(Cog):
        release_every = 2.0

        async def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

        def release(self, now: float) -> list[Any]:
            return [now]

        def event_finished(self, event_id: Any) -> str:
            return f"finished {event_id}"

    wrapped: Any = concurrent(Timed(), 4)
    assert wrapped.release_every == 2.0 and wrapped.release(5.0) == [5.0]
    assert wrapped.event_finished(7) == "finished 7"
    with pytest.raises(AttributeError):
        wrapped.no_such_handler  # noqa: B018
