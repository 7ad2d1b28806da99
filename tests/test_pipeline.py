"""Pipelines: running cogs, counters and accounting, failures, stop/finish/done, kill."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from archangel import ExitReason, InvalidArgument, ProcessManager
from archangel.pipes.cogs import Cog, concurrent, itemsetter, keep, mapper
from archangel.pipes.inbox import FailureLog
from archangel.pipes.pipeline import Pipeline
from tests.helpers import until


def double(x: int) -> tuple[int]:
    return (x * 2,)


def odd_only(x: int) -> tuple[int] | None:
    return (x,) if x % 2 else None


class Recorder(Cog):
    """Passes items on, holds every ``hold``-th until finish, records its life."""

    def __init__(self, name: str, log: list[str], hold: int = 0) -> None:
        self.name = name
        self.log = log
        self.hold = hold
        self.seen: list[Any] = []
        self.held: list[Any] = []

    def __call__(self, item: Any) -> Iterable[Any] | None:
        self.seen.append(item)
        if self.hold and isinstance(item, int) and item % self.hold == 0:
            self.held.append(item)
            return None
        return (item,)

    def finish(self) -> list[Any]:
        self.log.append(f"finish {self.name}")
        held, self.held = self.held, []
        return held

    def done(self) -> None:
        self.log.append(f"done {self.name}")


class AsyncRecorder(Recorder):
    """The same, but ``async def`` throughout."""

    async def __call__(self, item: Any) -> Iterable[Any] | None:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().__call__(item)

    async def finish(self) -> list[Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().finish()

    async def done(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().done()


async def forever(values: Iterable[Any], closed: list[str] | None = None) -> AsyncIterator[Any]:
    """Yields ``values``, then waits for ever (until the pipeline stops it)."""
    try:
        for value in values:
            yield value
        await asyncio.Event().wait()
    finally:
        if closed is not None:
            closed.append("closed")


def identity(counters: Any) -> bool:
    """The accounting identity of a train (or a cog) whose cogs output at most one item."""
    ended = ("out", "swallowed", "failed", "dropped", "in_flight")
    return bool(counters["in"] + counters["flushed"] == sum(counters[key] for key in ended))


def all_identities(pipeline: Pipeline) -> bool:
    """The identity holds for the train and for every cog."""
    return identity(pipeline.counters) and all(identity(c) for c in pipeline.cog_counters)


# -- running --------------------------------------------------------------------------


async def test_sync_train_runs_to_the_end_of_its_supply() -> None:
    out: list[int] = []
    pipeline = Pipeline(range(1000), double, odd_only, sink=out.append, batch=64)
    counters = await pipeline.run()
    assert out == []  # doubled numbers are even: all swallowed
    assert dict(counters) == {
        "in": 1000,
        "out": 0,
        "swallowed": 1000,
        "failed": 0,
        "flushed": 0,
        "dropped": 0,
        "in_flight": 0,
    }
    first, second = pipeline.cog_counters
    assert (first["in"], first["out"], first["swallowed"]) == (1000, 1000, 0)
    assert (second["in"], second["out"], second["swallowed"]) == (1000, 0, 1000)
    assert first["seconds"] >= 0.0 and set(first) == {
        "in",
        "out",
        "swallowed",
        "failed",
        "flushed",
        "dropped",
        "in_flight",
        "seconds",
    }
    assert pipeline.exit_reason is ExitReason.NORMAL


async def test_fan_out_generators_and_helpers_are_counted_exactly() -> None:
    def split(x: int) -> Iterable[int]:
        yield from range(x % 3)  # 0, 1 or 2 outputs: 0 outputs is "swallowed"

    out: list[int] = []
    pipeline = Pipeline(range(9), split, mapper(lambda x: x + 1), keep(bool), sink=out.append)
    await pipeline.run()
    assert out == [1, 1, 2, 1, 1, 2, 1, 1, 2]
    gen = pipeline.cog_counters[0]
    assert (gen["in"], gen["out"], gen["swallowed"]) == (9, 9, 3)


def lazy_empty(x: int) -> Iterable[int]:
    """A plain function returning a lazy iterator: empty for multiples of 3."""
    return map(int, [] if x % 3 == 0 else [x])


async def async_lazy_empty(x: int) -> Iterable[int]:
    await asyncio.sleep(0)
    return lazy_empty(x)


@pytest.mark.parametrize("cog", [lazy_empty, async_lazy_empty])
async def test_a_lazy_empty_output_counts_as_swallowed(cog: Any) -> None:
    out: list[int] = []
    pipeline = Pipeline(range(9), cog, sink=out.append)
    counters = await pipeline.run()
    assert out == [1, 2, 4, 5, 7, 8]
    (stats,) = pipeline.cog_counters
    assert (stats["in"], stats["out"], stats["swallowed"]) == (9, 6, 3)
    assert counters["swallowed"] == 3 and all_identities(pipeline)


def gen_fails_on_odd(x: int) -> Iterator[int]:
    yield x
    if x % 2:
        raise ValueError(f"odd {x}")


def lazy_fails_on_odd(x: int) -> Iterable[int]:
    return map(int, [str(x), "odd"] if x % 2 else [str(x)])  # int("odd") raises


async def agen_fails_on_odd(x: int) -> AsyncIterator[int]:
    yield x
    await asyncio.sleep(0)
    if x % 2:
        raise ValueError(f"odd {x}")


async def async_fails_on_odd(x: int) -> tuple[int]:
    await asyncio.sleep(0)
    if x % 2:
        raise ValueError(f"odd {x}")
    return (x,)


@pytest.mark.parametrize(
    "cog", [gen_fails_on_odd, lazy_fails_on_odd, agen_fails_on_odd, async_fails_on_odd]
)
async def test_a_failed_item_outputs_nothing_even_what_it_yielded_before_raising(
    cog: Any,
) -> None:
    out: list[int] = []
    failed: list[tuple[Any, Any]] = []
    pipeline = Pipeline(
        range(10),
        cog,
        double,
        sink=out.append,
        errors=lambda item, exc, by: failed.append((item, by)),
        log_rate=0,
    )
    counters = await pipeline.run()
    assert out == [0, 4, 8, 12, 16]
    assert failed == [(x, cog) for x in (1, 3, 5, 7, 9)]
    first, second = pipeline.cog_counters
    assert (first["in"], first["out"], first["failed"]) == (10, 5, 5)
    assert second["in"] == 5
    assert (counters["in"], counters["out"], counters["failed"]) == (10, 5, 5)
    assert all_identities(pipeline) and counters["in_flight"] == 0


async def test_async_and_async_generator_cogs_keep_order() -> None:
    async def slow_double(x: int) -> tuple[int]:
        await asyncio.sleep(0)
        return (x * 2,)

    async def twice(x: int) -> AsyncIterator[int]:
        yield x
        await asyncio.sleep(0)
        yield x

    out: list[int] = []
    pipeline = Pipeline(forever_values(range(5)), slow_double, twice, sink=out.append)
    await pipeline.run()
    assert out == [0, 0, 2, 2, 4, 4, 6, 6, 8, 8]
    assert dict(pipeline.counters)["out"] == 10


async def forever_values(values: Iterable[Any]) -> AsyncIterator[Any]:
    for value in values:
        await asyncio.sleep(0)
        yield value


@pytest.mark.parametrize("how", ["concurrent()", "Cog.concurrency"])
async def test_concurrency_limit_is_reached_and_respected(how: str) -> None:
    running = 0
    most = 0
    gate = asyncio.Event()

    async def work(x: int) -> tuple[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            gate.set()
        await gate.wait()
        running -= 1
        return (x,)

    class Work(Cog):
        concurrency = 3

        async def __call__(self, item: int) -> tuple[int]:
            return await work(item)

    cog = concurrent(work, limit=3) if how == "concurrent()" else Work()
    out: list[int] = []
    pipeline = Pipeline(range(20), cog, sink=out.append)
    async with asyncio.timeout(10):  # with a limit below 3 the gate never opens
        await pipeline.run()
    assert most == 3
    assert sorted(out) == list(range(20))


async def test_async_sink_and_batch_supply() -> None:
    class Batches:
        async def batches(self) -> AsyncIterator[list[int]]:
            yield [1, 2, 3]
            yield [4]

    got: list[int] = []

    async def sink(x: int) -> None:
        await asyncio.sleep(0)
        got.append(x)

    pipeline = Pipeline(Batches(), double, sink=sink)
    await pipeline.run()
    assert got == [2, 4, 6, 8]
    assert pipeline.counters["out"] == 4


def test_misuse_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not callable"):
        Pipeline(range(3), "nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not an iterable"):
        Pipeline(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="batch"):
        Pipeline(range(3), batch=0)
    with pytest.raises(InvalidArgument, match="only an async cog"):
        concurrent(double, limit=2)


# -- as a process -------------------------------------------------------------------


async def test_spawned_pipeline_is_listed_with_its_counters_and_kept_in_history() -> None:
    manager = ProcessManager()
    entered = asyncio.Event()

    def mark(x: int) -> tuple[int]:
        entered.set()
        return (x,)

    pipeline = manager.spawn(Pipeline(forever(range(10)), mark, odd_only, name="odds"))
    await entered.wait()
    (info,) = manager.ps(kind="pipeline")
    assert info.name == "odds" and info.kind == "pipeline"
    assert info.details["in"] == 10 and info.details["swallowed"] == 5
    assert [c["cog"] for c in info.details["cogs"]] == ["mark", "odd_only"]
    await manager.shutdown(timeout=5)
    assert pipeline.exit_reason is ExitReason.SHUTDOWN
    record = manager.history[-1]
    assert record.pid == pipeline.pid and record.details["out"] == 5
    assert record.details["phase"] == "done"


# -- stopping: finish in train order, then done -------------------------------------


@pytest.mark.parametrize("how", ["stop", "shutdown", "supply ends"])
async def test_shutdown_order_finish_in_train_order_then_done(how: str) -> None:
    log: list[str] = []
    first = Recorder("first", log, hold=3)
    middle = AsyncRecorder("middle", log, hold=4)
    last = Recorder("last", log)
    out: list[int] = []
    closed: list[str] = []
    supply: Any = range(1, 13) if how == "supply ends" else forever(range(1, 13), closed)
    manager = ProcessManager()
    pipeline = Pipeline(supply, first, middle, last, sink=out.append)
    manager.spawn(pipeline)
    if how == "stop":
        while pipeline.counters["out"] + pipeline.counters["swallowed"] < 12:
            await asyncio.sleep(0)  # the supply is waiting: everything has gone through
        await pipeline.stop()
        assert closed == ["closed"]  # the supply's iterator was closed
    elif how == "shutdown":
        while pipeline.counters["in"] < 12:
            await asyncio.sleep(0)
        await manager.shutdown(timeout=5)
    else:
        await pipeline.wait()
    finished = ["finish first", "finish middle", "finish last"]
    assert log == [*finished, "done first", "done middle", "done last"]
    # first holds 3, 6, 9, 12 and flushes them at its finish through middle,
    # which holds 4, 8 and (now) 12, and flushes those at its own finish.
    assert sorted(out) == list(range(1, 13))
    assert last.seen[-3:] == [4, 8, 12]  # middle's flush reached last before last finished
    assert first.held == middle.held == []
    counters = pipeline.counters
    assert counters["flushed"] == 4 + 3
    assert identity(counters) and counters["in_flight"] == 0
    expected = ExitReason.NORMAL if how == "supply ends" else ExitReason.SHUTDOWN
    assert pipeline.exit_reason is expected


async def test_killed_pipeline_still_calls_done_on_every_cog_but_not_finish() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def stuck(x: int) -> tuple[int]:
        reached.set()
        await gate.wait()
        return (x,)

    manager = ProcessManager()
    cogs = [Recorder("a", log), stuck, AsyncRecorder("b", log)]
    pipeline = manager.spawn(Pipeline(forever(range(100)), *cogs))
    await reached.wait()
    assert manager.kill(pipeline.pid)  # type: ignore[arg-type]
    await pipeline.wait()
    assert log == ["done a", "done b"]
    assert pipeline.exit_reason is ExitReason.KILLED
    assert pipeline.phase == "done"


async def test_killed_before_its_first_step_still_calls_done() -> None:
    log: list[str] = []
    manager = ProcessManager()
    pipeline = manager.spawn(Pipeline(range(10), Recorder("a", log)))
    pipeline.kill()
    await pipeline.wait()
    assert log == ["done a"]
    assert pipeline.exit_reason is ExitReason.KILLED


async def test_killed_while_finishing_still_calls_done_on_every_cog() -> None:
    log: list[str] = []
    finishing = asyncio.Event()

    class SlowFinish(Recorder):
        async def finish(self) -> list[Any]:  # type: ignore[override]
            held = super().finish()
            finishing.set()
            await asyncio.Event().wait()  # until killed
            return held

    manager = ProcessManager()
    cogs = [Recorder("a", log), SlowFinish("b", log), Recorder("c", log)]
    pipeline = manager.spawn(Pipeline(range(5), *cogs))
    await finishing.wait()
    assert pipeline.phase == "finishing"
    assert manager.kill(pipeline.pid)  # type: ignore[arg-type]
    await pipeline.wait()
    assert log == ["finish a", "finish b", "done a", "done b", "done c"]
    assert pipeline.exit_reason is ExitReason.KILLED
    assert pipeline.counters["out"] == 5 and all_identities(pipeline)


@pytest.mark.parametrize("where", ["async cog", "async sink"])
async def test_a_kill_counts_the_items_in_flight_as_dropped(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="archangel.pipes.pipeline")
    reached = asyncio.Event()

    async def stuck(x: int) -> tuple[int]:
        reached.set()
        await asyncio.Event().wait()  # until killed
        return (x,)

    async def stuck_sink(x: int) -> None:
        await stuck(x)

    if where == "async cog":
        pipeline = Pipeline(range(1000), double, stuck, batch=512, buffer=4)
    else:
        pipeline = Pipeline(range(1000), double, sink=stuck_sink, batch=512, buffer=4)
    manager = ProcessManager()
    manager.spawn(pipeline)
    await reached.wait()
    # one batch is in: an item in the stuck cog (or sink), a full inbox, the rest waiting
    running = pipeline.counters
    assert (running["in"], running["in_flight"], running["dropped"]) == (512, 512, 0)
    assert all_identities(pipeline)
    assert manager.kill(pipeline.pid)  # type: ignore[arg-type]
    await pipeline.wait()
    counters = pipeline.counters
    assert (counters["in"], counters["in_flight"], counters["dropped"]) == (512, 0, 512)
    assert all_identities(pipeline)
    dropped_by_cog = [c["dropped"] for c in pipeline.cog_counters]
    assert dropped_by_cog == ([0, 1] if where == "async cog" else [0])
    details = manager.history[-1].details
    assert details["dropped"] == 512 and details["in_flight"] == 0
    assert [c["dropped"] for c in details["cogs"]] == dropped_by_cog
    assert "512 items in flight dropped" in caplog.text


async def test_a_failing_supply_ends_the_pipeline_with_its_error_after_finish_and_done() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise OSError("disk on fire")

    log: list[str] = []
    pipeline = Pipeline(broken(), Recorder("a", log))
    with pytest.raises(OSError, match="disk on fire"):
        await pipeline.run()
    assert log == ["finish a", "done a"]
    assert pipeline.exit_reason is ExitReason.ERROR


async def test_stop_before_start_and_run_cancelled() -> None:
    pipeline = Pipeline(range(3))
    await pipeline.stop()  # never started: ends at once
    assert pipeline.exit_reason is ExitReason.SHUTDOWN

    log: list[str] = []
    runner = asyncio.ensure_future(Pipeline(forever([1]), Recorder("a", log)).run())
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert log == ["done a"]


# -- failures -----------------------------------------------------------------------


async def test_failing_cog_drops_the_item_feeds_the_error_sink_and_log_is_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def picky(item: dict[str, int]) -> tuple[dict[str, int]]:
        if item["id"] % 4 == 0:
            raise ValueError(f"bad {item['id']}")
        return (item,)

    failed: list[tuple[Any, BaseException, Any]] = []
    out: list[dict[str, int]] = []
    caplog.set_level(logging.ERROR, logger="archangel.pipes.pipeline")
    pipeline = Pipeline(
        ({"id": i} for i in range(400)),
        picky,
        sink=out.append,
        errors=lambda item, exc, cog: failed.append((item, exc, cog)),
        log_rate=5,
    )
    await pipeline.run()
    assert len(out) == 300 and len(failed) == 100
    item, exc, cog = failed[0]
    assert item == {"id": 0} and isinstance(exc, ValueError) and cog is picky
    assert pipeline.cog_counters[0]["failed"] == 100
    assert identity(pipeline.counters)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6  # 5 failures, then one summary
    assert lines[0].startswith("0: cog picky of pipeline Pipeline")  # the item id comes first
    assert "raised ValueError('bad 0')" in lines[0]
    assert lines[-1].endswith("suppressed 95 more failure lines")


async def test_the_suppressed_summary_comes_when_the_window_ends_not_only_at_the_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FailureLog, "period", 0.02)
    caplog.set_level(logging.ERROR, logger="archangel.pipes.pipeline")

    def always(x: int) -> None:
        raise ValueError(x)

    pipeline = Pipeline(forever(range(30)), always, log_rate=2)
    pipeline.start()
    await until(lambda: "suppressed 28 more failure lines" in caplog.text)
    assert pipeline.phase == "running"
    await pipeline.stop()
    assert len(caplog.records) == 3


async def test_error_sink_failures_are_rate_limited_and_name_the_item(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FailureLog, "period", 3600.0)  # one window for the whole run
    caplog.set_level(logging.ERROR, logger="archangel.pipes.pipeline")

    def bad(item: dict[str, str]) -> None:
        raise ValueError(item["key"])

    def errors(item: Any, exc: BaseException, cog: Any) -> None:
        raise RuntimeError("error sink down")

    pipeline = Pipeline(
        ({"key": f"k{i}"} for i in range(50)),
        bad,
        errors=errors,
        id_getter=lambda item: f"<{item['key']}>",
        log_rate=3,
    )
    counters = await pipeline.run()
    assert counters["failed"] == 50
    lines = [r.getMessage() for r in caplog.records]
    cog_lines = [line for line in lines if "cog bad of pipeline" in line]
    sink_lines = [line for line in lines if "error sink errors of pipeline" in line]
    assert len(lines) == len(cog_lines) + len(sink_lines) == 8
    assert [line.split(":")[0] for line in cog_lines[:3]] == ["<k0>", "<k1>", "<k2>"]
    assert cog_lines[-1].endswith("suppressed 47 more failure lines")
    assert sink_lines[0].startswith("<k0>: error sink errors of pipeline Pipeline")
    assert sink_lines[0].endswith("raised RuntimeError('error sink down')")
    assert sink_lines[-1].endswith("suppressed 47 more failure lines")


async def test_a_failing_finish_or_done_is_logged_and_the_pipeline_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadFinish(Recorder):
        def finish(self) -> list[Any]:
            super().finish()
            raise RuntimeError("finish broke")

    class BadDone(Recorder):
        def done(self) -> None:
            super().done()
            raise RuntimeError("done broke")

    caplog.set_level(logging.ERROR, logger="archangel.pipes.pipeline")
    log: list[str] = []
    out: list[int] = []
    cogs = [BadFinish("a", log, hold=2), BadDone("b", log), Recorder("c", log, hold=3)]
    pipeline = Pipeline(range(1, 7), *cogs, sink=out.append)
    await pipeline.run()
    finished = ["finish a", "finish b", "finish c"]
    assert log == [*finished, "done a", "done b", "done c"]
    assert out == [1, 5, 3]  # a lost 2, 4 and 6 with its finish; c flushed 3
    assert pipeline.exit_reason is ExitReason.NORMAL
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].endswith("finish() of cog BadFinish raised; the items it held are lost")
    assert messages[1].endswith("done() of cog BadDone raised")
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]
    assert [str(exc) for exc in errors] == ["finish broke", "done broke"]


async def test_a_failing_sink_counts_as_failed() -> None:
    def sink(x: int) -> None:
        if x == 2:
            raise RuntimeError("full")

    failed: list[Any] = []
    pipeline = Pipeline(range(4), sink=sink, errors=lambda *a: failed.append(a[2]))
    counters = await pipeline.run()
    assert (counters["out"], counters["failed"]) == (3, 1)
    assert failed == [sink]


# -- accounting and back-pressure -----------------------------------------------------


async def test_accounting_holds_whenever_it_is_read() -> None:
    async def jitter(x: int) -> tuple[int] | None:
        for _ in range(x % 3):
            await asyncio.sleep(0)
        return None if x % 7 == 0 else (x,)

    def fragile(x: int) -> tuple[int]:
        if x % 11 == 0:
            raise ValueError(x)
        return (x,)

    async def sink(x: int) -> None:
        await asyncio.sleep(0)

    pipeline = Pipeline(
        range(3000),
        odd_only,
        concurrent(jitter, limit=4),
        fragile,
        sink=sink,
        batch=50,
        buffer=16,
        log_rate=0,
    )
    samples = 0
    pipeline.start()
    while not pipeline.task.done():  # type: ignore[union-attr]
        counters = pipeline.counters
        assert identity(counters), dict(counters)
        samples += 1
        await asyncio.sleep(0)
    await pipeline.wait()
    counters = pipeline.counters
    assert samples > 50
    assert identity(counters) and counters["in_flight"] == 0
    assert counters["in"] == 3000 and counters["failed"] > 0 and counters["swallowed"] > 0


@pytest.mark.parametrize("sink_kind", ["sync", "async"])
async def test_accounting_holds_when_read_from_inside_cogs_and_sinks(sink_kind: str) -> None:
    pipeline: Pipeline
    readings: list[bool] = []

    def check() -> None:
        readings.append(all_identities(pipeline))

    def spy(x: int) -> tuple[int]:
        check()
        return (x,)

    def fragile(x: int) -> tuple[int] | None:
        check()
        if x % 5 == 0:
            raise ValueError(x)
        return None if x % 7 == 0 else (x,)

    async def async_spy(x: int) -> tuple[int]:
        check()
        await asyncio.sleep(0)
        check()
        return (x,)

    def sync_sink(x: int) -> None:
        check()
        if x % 11 == 0:
            raise ValueError(x)

    async def async_sink(x: int) -> None:
        await asyncio.sleep(0)
        sync_sink(x)

    def errors(item: Any, exc: BaseException, cog: Any) -> None:
        check()

    pipeline = Pipeline(
        range(300),
        spy,
        fragile,
        Recorder("holds", [], hold=3),
        async_spy,
        spy,
        sink=sync_sink if sink_kind == "sync" else async_sink,
        errors=errors,
        batch=50,
        buffer=8,
        log_rate=0,
    )
    counters = await pipeline.run()
    assert len(readings) > 1000 and all(readings)
    assert counters["in_flight"] == 0 and all_identities(pipeline)
    assert counters["failed"] > 0 and counters["swallowed"] > 0 and counters["flushed"] > 0


async def test_slow_sink_keeps_buffers_within_their_bound() -> None:
    bound, batch = 8, 32
    worst: list[int] = []
    ahead: list[int] = []
    pipeline: Pipeline

    async def slow_sink(item: int) -> None:
        # Only records: an assert here would count as a sink failure, not fail the test.
        for _ in range(100):  # a hundred loop turns per item: far slower than the supply
            await asyncio.sleep(0)
        occupancy = [used for used, _ in pipeline.buffers]
        worst.append(max(occupancy))
        ahead.append(pipeline.counters["in"] - pipeline.counters["out"])

    async def passthrough(x: int) -> tuple[int]:
        return (x,)

    pipeline = Pipeline(
        itertools.count(),
        passthrough,
        sink=slow_sink,
        batch=batch,
        buffer=bound,
    )
    pipeline.start()
    while len(worst) < 60:
        await asyncio.sleep(0)
    await pipeline.stop()
    assert pipeline.counters["failed"] == 0
    assert max(worst) <= bound
    # read-ahead is bounded: one batch in hand, one inbox per stage, one item per worker
    assert len(ahead) >= 60 and max(ahead) <= batch + bound * len(pipeline.buffers) + 2
    assert all(bound_ == bound for _, bound_ in pipeline.buffers)
    assert pipeline.counters["in"] < 60 + batch + 2 * bound + 2


# -- the phase table ------------------------------------------------------------


def test_the_phase_table_reaches_every_phase_and_ends_in_done() -> None:
    from archangel.pipes.pipeline import _TRANSITIONS, _Event, _Phase

    reached, todo = {_Phase.NEW}, [_Phase.NEW]
    while todo:
        phase = todo.pop()
        for row in _TRANSITIONS.values():
            after = row.get(phase, phase)
            if after not in reached:
                reached.add(after)
                todo.append(after)
    assert reached == set(_Phase)
    assert set(_TRANSITIONS) == set(_Event)
    assert {p.shown for p in _Phase} == {"new", "running", "stopping", "finishing", "done"}
    for done in (_Phase.DONE, _Phase.DONE_STOPPED):
        assert all(row.get(done, done).shown == "done" for row in _TRANSITIONS.values())
    # A stop is remembered: it leads to the phases that ignore a stop, and
    # nothing leads out of them again (a second stop never closes the supply).
    stopped = set(_Phase) - set(_TRANSITIONS[_Event.STOP])
    assert set(_TRANSITIONS[_Event.STOP].values()) <= stopped
    for phase in stopped:
        for row in _TRANSITIONS.values():
            assert row.get(phase, phase) in stopped


class ClosingSupply:
    """A batch supply that counts its ``close()`` calls and never hands anything over."""

    def __init__(self) -> None:
        self.closes = 0
        self._closed = asyncio.Event()

    def close(self) -> None:
        self.closes += 1
        self._closed.set()

    async def batches(self) -> AsyncIterator[list[Any]]:
        await self._closed.wait()
        return
        yield []


async def test_killed_then_stopped_before_its_first_step_closes_the_supply_once() -> None:
    log: list[str] = []
    supply = ClosingSupply()
    pipeline = ProcessManager().spawn(Pipeline(supply, Recorder("a", log)))
    pipeline.kill()
    pipeline.stop()
    pipeline.stop()
    assert pipeline.phase == "new"
    await pipeline.wait()
    assert supply.closes == 1 and log == ["done a"]
    assert pipeline.exit_reason is ExitReason.KILLED and pipeline.phase == "done"


async def test_a_second_stop_while_reading_closes_the_supply_once() -> None:
    log: list[str] = []
    supply = ClosingSupply()
    pipeline = ProcessManager().spawn(Pipeline(supply, Recorder("a", log)))
    await until(lambda: pipeline.phase == "running" and pipeline._reading)
    pipeline.stop()
    assert pipeline.phase == "stopping"
    await pipeline.stop()
    assert supply.closes == 1 and log == ["finish a", "done a"]
    assert pipeline.exit_reason is ExitReason.SHUTDOWN and pipeline.phase == "done"


def test_each_stage_after_the_first_has_an_inbox_not_a_bus_channel() -> None:
    from archangel.pipes.inbox import Inbox

    async def later(x: int) -> tuple[int]:
        return (x,)

    pipeline = Pipeline(range(3), double, later, buffer=4)
    inboxes = [stage.inbox for stage in pipeline.train.stages[1:]]
    assert inboxes and all(isinstance(inbox, Inbox) for inbox in inboxes)
    assert repr(inboxes[0]) == "<Inbox 0/4 waiting=0 [open]>"
    assert pipeline.buffers == [(0, 4)]


# -- ids: id_setter ---------------------------------------------------------------------


async def numbered_async(n: int) -> AsyncIterator[dict[str, int]]:
    for i in range(n):
        yield {"n": i}


@pytest.mark.parametrize("supply", ["sync", "async"])
async def test_id_setter_gives_every_item_an_id_that_failures_name(
    supply: str, caplog: pytest.LogCaptureFixture
) -> None:
    def picky(item: dict[str, Any]) -> tuple[dict[str, Any]]:
        if item["n"] == 3:
            raise ValueError("three")
        return (item,)

    failed: list[Any] = []
    out: list[dict[str, Any]] = []
    caplog.set_level(logging.ERROR)
    items = numbered_async(5) if supply == "async" else [{"n": i} for i in range(5)]
    pipeline = Pipeline(
        items,
        picky,
        sink=out.append,
        errors=lambda item, exc, cog: failed.append(item),
        id_setter=itemsetter("id"),
        ids=(f"ev-{i}" for i in itertools.count(100)),
        name="ids",
    )
    await pipeline.run()
    assert [item["id"] for item in out] == ["ev-100", "ev-101", "ev-102", "ev-104"]
    assert failed == [{"n": 3, "id": "ev-103"}]
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("ev-103: cog picky of pipeline ids")
    assert identity(pipeline.counters)


async def test_id_setter_may_wrap_items_and_its_failures_are_counted() -> None:
    def wrap(line: str, event_id: object) -> dict[str, Any]:
        if not line:
            raise ValueError("an empty line has no event")
        return {"id": event_id, "line": line}

    out: list[dict[str, Any]] = []
    failed: list[tuple[Any, Any]] = []
    pipeline = Pipeline(
        ["a", "", "b"],
        mapper(lambda e: e),
        sink=out.append,
        id_setter=wrap,
        errors=lambda item, exc, cog: failed.append((item, cog)),
    )
    counters = await pipeline.run()
    assert out == [{"id": 1, "line": "a"}, {"id": 3, "line": "b"}]  # the ids are unique
    assert failed == [("", wrap)]
    assert (counters["in"], counters["out"], counters["failed"]) == (3, 2, 1)
    assert identity(counters)


def test_ids_without_an_id_setter_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="without an id_setter"):
        Pipeline([], ids=iter([1, 2]))
    with pytest.raises(InvalidArgument, match="not callable"):
        Pipeline([], id_setter="id")  # type: ignore[arg-type]


# -- timed release ------------------------------------------------------------------------


class Window(Cog):
    """Holds every item ``hold`` seconds (loop time), released by its timer."""

    def __init__(self, hold: float, every: float) -> None:
        self.hold = hold
        self.release_every = every
        self.held: list[tuple[float, Any]] = []
        self.calls: list[float] = []
        self.finished = False

    def __call__(self, item: Any) -> None:
        self.held.append((asyncio.get_running_loop().time() + self.hold, item))

    def release(self, now: float) -> list[Any]:
        assert not self.finished, "release() after finish()"
        self.calls.append(now)
        due = [item for when, item in self.held if when <= now]
        self.held = [(when, item) for when, item in self.held if when > now]
        return due

    def finish(self) -> list[Any]:
        self.finished = True
        return [item for _, item in self.held]


class AsyncWindow(Window):
    async def release(self, now: float) -> list[Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().release(now)


@pytest.mark.parametrize("window", [Window, AsyncWindow])
async def test_a_cog_releases_held_items_on_its_timer(clock: Any, window: type[Window]) -> None:
    async def slow(item: Any) -> tuple[Any]:  # an inbox between the window and the sink
        await asyncio.sleep(0)
        return (item * 10,)

    out: list[int] = []
    cog = window(hold=2.5, every=1.0)
    pipeline = Pipeline(forever([1, 2, 3]), cog, slow, sink=out.append)
    pipeline.start()
    await clock.settle()
    assert cog.held and out == []
    await clock.advance(2.0)  # ticks at +1 and +2: nothing due yet
    assert out == [] and len(cog.calls) == 2
    await clock.advance(1.0)  # the tick at +3 releases them
    assert out == [10, 20, 30]
    assert pipeline.phase == "running"
    counters = pipeline.cog_counters[0]
    assert (counters["swallowed"], counters["flushed"], counters["out"]) == (3, 3, 3)
    assert all_identities(pipeline)
    await pipeline.stop()
    calls = len(cog.calls)
    await clock.advance(5.0)
    assert len(cog.calls) == calls  # no release after finish (its timer is gone)


async def test_held_items_not_yet_due_still_come_out_at_finish(clock: Any) -> None:
    out: list[int] = []
    cog = Window(hold=10.0, every=1.0)
    pipeline = Pipeline(forever([1, 2]), cog, sink=out.append)
    pipeline.start()
    await clock.advance(3.0)
    assert out == [] and len(cog.calls) == 3
    await pipeline.stop()
    assert out == [1, 2] and all_identities(pipeline)


async def test_a_killed_pipeline_stops_its_release_timers(clock: Any) -> None:
    cog = Window(hold=0.5, every=1.0)
    pipeline = Pipeline(forever([1]), cog)
    pipeline.start()
    await clock.advance(1.0)
    assert len(cog.calls) == 1
    pipeline.kill()
    await pipeline.wait()
    await clock.advance(5.0)
    assert len(cog.calls) == 1


async def test_timed_release_on_a_real_clock() -> None:
    out: list[int] = []
    cog = Window(hold=0.0, every=0.01)
    pipeline = Pipeline(forever([1, 2]), cog, sink=out.append)
    pipeline.start()
    await until(lambda: out == [1, 2])
    await pipeline.stop()
    assert all_identities(pipeline)


def test_a_bad_release_every_is_refused() -> None:
    for every in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(InvalidArgument, match="release_every"):
            Pipeline([], Window(hold=1, every=every))  # type: ignore[arg-type]

    class NoRelease:
        release_every = 1.0

        def __call__(self, item: Any) -> tuple[Any]:
            return (item,)

    with pytest.raises(InvalidArgument, match="has no release"):
        Pipeline([], NoRelease())
