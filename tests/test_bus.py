"""The bus (bus/bus.py): lifecycle transitions, wait, and the documented example.

Ports magicbus's lifecycle transitions and wait. Channels, timers and states
have their own test files (test_channels.py, test_timers.py, test_states.py);
the ``bus`` fixture is in the conftest.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from archangel.bus.bus import Bus
from archangel.bus.states import State, StateGraph
from archangel.errors import ChannelFailures, InvalidArgument, InvalidTransition


def recorder(bus: Bus[Any], log: list[Any]) -> None:
    """Subscribe to every state of the bus's graph, logging the states published."""
    for state in bus.graph.states:
        bus.subscribe(state, lambda *args, state=state: log.append(state))


# -- transitions (magicbus's BusMethodTests) ------------------------------------------------


async def test_initial_to_run_publishes_each_state_in_order(
    bus: Bus[State], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="archangel.bus.bus")
    log: list[State] = []
    recorder(bus, log)
    assert bus.state is State.INITIAL
    await bus.transition(State.RUN)
    assert log == [State.ENTER, State.IDLE, State.START, State.RUN]
    assert bus.state is State.RUN
    assert [r.getMessage() for r in caplog.records] == [
        "bus state: ENTER",
        "bus state: IDLE",
        "bus state: START",
        "bus state: RUN",
    ]
    assert bus.error is None


async def test_run_to_idle_and_idle_to_exited(bus: Bus[State]) -> None:
    log: list[State] = []
    await bus.transition(State.RUN)
    recorder(bus, log)
    await bus.transition(State.IDLE)
    assert log == [State.STOP, State.IDLE]
    await bus.transition(State.EXITED)
    assert log == [State.STOP, State.IDLE, State.EXIT, State.EXITED]


async def test_initial_to_exited_skips_start(bus: Bus[State]) -> None:
    log: list[State] = []
    recorder(bus, log)
    await bus.transition(State.EXITED)
    assert log == [State.ENTER, State.IDLE, State.EXIT, State.EXITED]


async def test_graceful_goes_round_through_idle(bus: Bus[State]) -> None:
    log: list[State] = []
    await bus.transition(State.RUN)
    recorder(bus, log)
    await bus.graceful()
    assert log == [State.STOP, State.IDLE, State.START, State.RUN]


async def test_transition_to_the_current_state_publishes_nothing(bus: Bus[State]) -> None:
    log: list[State] = []
    recorder(bus, log)
    await bus.transition(State.INITIAL)
    assert log == []


async def test_transition_returns_what_the_subscribers_returned(bus: Bus[State]) -> None:
    """magicbus's ``transition()`` returns the output: a list of lists, per state entered."""
    bus.subscribe(State.ENTER, lambda: "entered")
    bus.subscribe(State.IDLE, lambda: 1, priority=10)

    async def idle_too() -> int:
        await asyncio.sleep(0)
        return 2

    bus.subscribe(State.IDLE, idle_too, priority=20)
    results = await bus.transition(State.START)
    assert results == [["entered"], [1, 2], []]
    assert results.states == [State.ENTER, State.IDLE, State.START]
    assert results.kept is True
    assert repr(results) == (
        "<TransitionResults {<State.ENTER>: ['entered'], <State.IDLE>: [1, 2], <State.START>: []}>"
    )
    bus.subscribe(State.STOP, lambda: "stopping")
    await bus.transition(State.RUN)
    again = await bus.graceful()
    assert again == [["stopping"], [1, 2], [], []]
    assert again.states == [State.STOP, State.IDLE, State.START, State.RUN]
    none = await bus.transition(State.RUN)
    assert (none, none.states, none.kept) == ([], [], True)


async def test_clear_removes_every_subscriber(bus: Bus[State]) -> None:
    log: list[Any] = []
    recorder(bus, log)
    bus.subscribe("custom", log.append)
    bus.subscribe("custom", len)
    await bus.publish("custom", "hello")  # proven plain: the hot path is cleared too
    bus.when("ready", log.append, "latch")
    count = len(bus.graph.states) + 2
    assert bus.clear() == count
    assert (bus.channels, bus.subscribers("custom")) == ((), ())
    assert not bus.has_subscribers(State.ENTER)
    assert await bus.publish("custom", "nobody") == []
    await bus.transition(State.RUN)
    assert log == ["hello"]
    bus.transpire("ready")  # latches are not subscribers: they stay
    assert log == ["hello", "latch"]
    assert bus.clear() == 0
    assert repr(bus) == "<Bus [RUN] 0 subscribers on 0 channels>"


async def test_an_unreachable_state_is_an_invalid_transition(bus: Bus[State]) -> None:
    await bus.transition(State.EXITED)
    with pytest.raises(
        InvalidTransition, match=re.escape("cannot go from <State.EXITED> to <State.RUN>: no path")
    ):
        await bus.transition(State.RUN)
    assert bus.state is State.EXITED


def failing(name: str) -> Any:
    def fail(*args: Any) -> None:
        raise RuntimeError(name)

    return fail


async def test_a_start_failure_takes_the_error_path_to_exited(bus: Bus[State]) -> None:
    log: list[State] = []
    recorder(bus, log)
    received: list[Any] = []
    bus.subscribe(State.START, failing("cannot bind"))
    bus.subscribe(State.START_ERROR, received.append)
    with pytest.raises(ChannelFailures) as caught:
        await bus.transition(State.RUN)
    assert log == [
        State.ENTER,
        State.IDLE,
        State.START,
        State.START_ERROR,
        State.STOP,
        State.IDLE,
        State.EXIT,
        State.EXITED,
    ]
    assert bus.state is State.EXITED
    assert bus.error is caught.value
    (cause,) = caught.value.exceptions
    assert isinstance(cause, ChannelFailures)
    assert cause.channel is State.START
    assert received == [cause]  # the error state's subscribers get what failed
    assert "going from INITIAL to RUN" in str(caught.value)
    assert "the bus is in EXITED" in str(caught.value)
    with pytest.raises(InvalidTransition):
        await bus.transition(State.RUN)


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        ("ENTER", "ENTER STOP_ERROR EXIT EXITED"),
        ("RUN", "ENTER IDLE START RUN START_ERROR STOP IDLE EXIT EXITED"),
        ("START STOP", "ENTER IDLE START START_ERROR STOP STOP_ERROR EXIT EXITED"),
        ("START EXIT", "ENTER IDLE START START_ERROR STOP IDLE EXIT EXIT_ERROR EXITED"),
    ],
)
async def test_error_paths(bus: Bus[State], broken: str, path: str) -> None:
    log: list[State] = []
    recorder(bus, log)
    for name in broken.split():
        bus.subscribe(State[name], failing(name))
    with pytest.raises(ChannelFailures) as caught:
        await bus.transition(State.RUN)
    assert [state.name for state in log] == path.split()
    assert [exc.channel.name for exc in caught.value.exceptions] == [  # type: ignore[union-attr]
        name for name in path.split() if name in broken.split()
    ]


async def test_failures_everywhere_still_end_in_exited(bus: Bus[State]) -> None:
    log: list[State] = []
    recorder(bus, log)
    for state in State:
        bus.subscribe(state, failing(state.name))
    with pytest.raises(ChannelFailures):
        await bus.transition(State.RUN)
    assert bus.state is State.EXITED
    assert log == [State.ENTER, State.STOP_ERROR, State.EXIT, State.EXIT_ERROR, State.EXITED]


async def test_a_graph_without_error_states_stops_where_it_failed() -> None:
    bus = Bus(StateGraph.from_edges({"off": "warming", "warming": "on"}))
    assert bus.state == "off"
    bus.subscribe("warming", failing("cold"))
    with pytest.raises(ChannelFailures):
        await bus.transition("on")
    assert bus.state == "warming"
    assert repr(bus) == "<Bus [warming] 1 subscribers on 1 channels>"


async def test_keyboard_interrupt_leaves_the_error_path_alone(bus: Bus[State]) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    bus.subscribe(State.START, interrupt)
    with pytest.raises(KeyboardInterrupt):
        await bus.transition(State.RUN)
    assert bus.state is State.START
    assert bus.error is None


async def test_a_cancelled_transition_stays_put_and_frees_the_bus(bus: Bus[State]) -> None:
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    bus.subscribe(State.START, hang)
    task = asyncio.create_task(bus.transition(State.RUN))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bus.state is State.START
    bus.unsubscribe(State.START, hang)
    await bus.transition(State.EXITED)
    assert bus.state is State.EXITED


async def test_concurrent_transitions_are_serialized(bus: Bus[State]) -> None:
    log: list[State] = []
    recorder(bus, log)
    gate = asyncio.Event()
    bus.subscribe(State.START, gate.wait)
    first = asyncio.create_task(bus.transition(State.RUN))
    second = asyncio.create_task(bus.transition(State.EXITED))
    await bus.wait(State.START)
    await asyncio.sleep(0)
    assert bus.state is State.START
    gate.set()
    await asyncio.gather(first, second)
    assert log == [
        State.ENTER,
        State.IDLE,
        State.START,
        State.RUN,
        State.STOP,
        State.IDLE,
        State.EXIT,
        State.EXITED,
    ]


async def test_a_transition_from_inside_a_transition_is_refused(bus: Bus[State]) -> None:
    refused: list[BaseException] = []

    async def reenter() -> None:
        try:
            await bus.transition(State.EXITED)
        except RuntimeError as exc:
            refused.append(exc)

    bus.subscribe(State.START, reenter)
    await bus.transition(State.RUN)
    assert bus.state is State.RUN
    assert "would wait for itself" in str(refused[0])


@pytest.mark.parametrize(
    ("target", "states"),
    [
        (State.RUN, [State.RUN]),
        (State.RUN, [State.START, State.RUN]),
        (State.EXITED, [State.EXITED]),
        (State.RUN, [State.IDLE]),  # passed through: still seen
    ],
)
async def test_wait_returns_once_the_state_comes(
    bus: Bus[State], target: State, states: list[State]
) -> None:
    waiter = asyncio.create_task(bus.wait(*states))
    await asyncio.sleep(0)
    assert not waiter.done()
    await bus.transition(target)
    async with asyncio.timeout(5):
        assert await waiter in states
    assert bus.state is target


async def test_wait_for_the_current_state_returns_at_once(bus: Bus[State]) -> None:
    assert await bus.wait(State.INITIAL, State.EXITED) is State.INITIAL


async def test_wait_refuses_states_that_never_come(bus: Bus[State]) -> None:
    with pytest.raises(InvalidTransition, match="cannot wait for 'nowhere'"):
        await bus.wait("nowhere")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await bus.wait()


def test_bus_defaults_and_repr() -> None:
    bus = Bus()
    assert bus.state is State.INITIAL
    assert repr(bus) == "<Bus [INITIAL] 0 subscribers on 0 channels>"
    custom = Bus(StateGraph.from_edges({"a": "b"}), initial="b")
    assert custom.state == "b"
    with pytest.raises(InvalidTransition, match="initial state 'z'"):
        Bus(StateGraph.from_edges({"a": "b"}), initial="z")


# -- the documentation's example runs and prints what the page says ------------------------


def test_the_documented_example(capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).parents[1] / "docs" / "bus.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: (\w+)\n(?:   :\w+:.*\n)*\n((?:(?:   .*)?\n)+)", page)
    code = next(body for kind, body in blocks if kind == "python" and "asyncio.run" in body)
    output = next(body for kind, body in blocks if kind == "text")
    exec(compile(_dedent(code), "docs/bus.rst", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == _dedent(output)


def _dedent(block: str) -> str:
    return "\n".join(line[3:] for line in block.splitlines()).strip() + "\n"
