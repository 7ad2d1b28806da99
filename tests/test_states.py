"""The state tables, driven without a loop: next hops, paths, error routes."""

from __future__ import annotations

import itertools

import pytest

from archangel.bus.states import (
    ERROR_STATES,
    LIFECYCLE,
    LIFECYCLE_EDGES,
    State,
    StateGraph,
    Walk,
)
from archangel.errors import InvalidTransition

IN, EN, ID, ST, RU, SP, EX, XD = (
    State.INITIAL,
    State.ENTER,
    State.IDLE,
    State.START,
    State.RUN,
    State.STOP,
    State.EXIT,
    State.EXITED,
)
SE, PE, XE = State.START_ERROR, State.STOP_ERROR, State.EXIT_ERROR


# -- magicbus's GraphTests, verbatim data --------------------------------------------------

#                                                       EXIT_ERROR
#                                                           |
#                                                           V
#                        START -----------> EXIT ------> EXITED
#                      /   |    A    /        A
#                     V    |     \  /         |
# START_ERROR        RUN   |    IDLE     STOP_ERROR
#      |              \    |     A
#      |               V   V    /
#      +----------------> STOP
MAGICBUS_TRANSITIONS = {
    "START": ("RUN", "STOP", "EXIT"),
    "RUN": "STOP",
    "START_ERROR": "STOP",
    "STOP": "IDLE",
    "IDLE": ("START", "EXIT"),
    "STOP_ERROR": "EXIT",
    "EXIT": "EXITED",
    "EXIT_ERROR": "EXITED",
}

MAGICBUS_NEXT = {
    ("EXIT", "EXITED"): "EXITED",
    ("EXIT_ERROR", "EXITED"): "EXITED",
    ("IDLE", "EXITED"): "EXIT",
    ("IDLE", "EXIT"): "EXIT",
    ("IDLE", "RUN"): "START",
    ("IDLE", "START"): "START",
    ("IDLE", "STOP"): "START",
    ("RUN", "EXITED"): "STOP",
    ("RUN", "EXIT"): "STOP",
    ("RUN", "IDLE"): "STOP",
    ("RUN", "START"): "STOP",
    ("RUN", "STOP"): "STOP",
    ("START", "EXITED"): "EXIT",
    ("START", "EXIT"): "EXIT",
    ("START", "IDLE"): "STOP",
    ("START", "RUN"): "RUN",
    ("START", "STOP"): "STOP",
    ("START_ERROR", "EXITED"): "STOP",
    ("START_ERROR", "EXIT"): "STOP",
    ("START_ERROR", "IDLE"): "STOP",
    ("START_ERROR", "RUN"): "STOP",
    ("START_ERROR", "START"): "STOP",
    ("START_ERROR", "STOP"): "STOP",
    ("STOP", "EXITED"): "IDLE",
    ("STOP", "EXIT"): "IDLE",
    ("STOP", "IDLE"): "IDLE",
    ("STOP", "RUN"): "IDLE",
    ("STOP", "START"): "IDLE",
    ("STOP_ERROR", "EXITED"): "EXIT",
    ("STOP_ERROR", "EXIT"): "EXIT",
}


def test_magicbus_shortest_paths() -> None:
    graph = StateGraph.from_edges(MAGICBUS_TRANSITIONS)
    assert dict(graph.next_hops) == MAGICBUS_NEXT


def test_magicbus_states() -> None:
    graph = StateGraph.from_edges(MAGICBUS_TRANSITIONS)
    assert set(graph.states) == {
        "START",
        "RUN",
        "STOP",
        "IDLE",
        "EXIT",
        "EXITED",
        "START_ERROR",
        "STOP_ERROR",
        "EXIT_ERROR",
    }


# -- the lifecycle, checked by hand ---------------------------------------------------------

# Every reachable (source, target) pair and its first hop, worked out on paper from
# LIFECYCLE_EDGES. (a, a) is never listed: staying put is not a move.
LIFECYCLE_NEXT = {
    **{(IN, target): EN for target in (EN, ID, ST, EX, RU, SP, XD)},
    **{(EN, target): ID for target in (ID, ST, EX, RU, SP, XD)},
    (ID, ST): ST,
    (ID, EX): EX,
    (ID, RU): ST,
    (ID, SP): ST,
    (ID, XD): EX,
    (ST, RU): RU,
    (ST, SP): SP,
    (ST, ID): SP,
    (ST, EX): SP,
    (ST, XD): SP,
    **{(RU, target): SP for target in (SP, ID, ST, EX, XD)},
    **{(SP, target): ID for target in (ID, ST, RU, EX, XD)},
    (EX, XD): XD,
    **{(SE, target): SP for target in (SP, ID, ST, RU, EX, XD)},
    (PE, EX): EX,
    (PE, XD): EX,
    (XE, XD): XD,
}


def test_lifecycle_next_hop_table_by_hand() -> None:
    assert len(LIFECYCLE_NEXT) == 43
    assert dict(LIFECYCLE.next_hops) == LIFECYCLE_NEXT


def test_lifecycle_edges_and_errors_are_the_documented_ones() -> None:
    assert dict(LIFECYCLE_EDGES) == {
        IN: (EN,),
        EN: (ID,),
        ID: (ST, EX),
        ST: (RU, SP),
        RU: (SP,),
        SP: (ID,),
        EX: (XD,),
        SE: (SP,),
        PE: (EX,),
        XE: (XD,),
    }
    assert dict(ERROR_STATES) == {ST: SE, RU: SE, EN: PE, SP: PE, ID: PE, EX: XE}
    assert dict(LIFECYCLE.errors) == dict(ERROR_STATES)
    assert (LIFECYCLE.initial, LIFECYCLE.final) == (IN, XD)
    assert set(LIFECYCLE.states) == set(State)


@pytest.mark.parametrize(
    ("source", "target", "path"),
    [
        (IN, RU, (EN, ID, ST, RU)),
        (RU, ID, (SP, ID)),
        (IN, XD, (EN, ID, EX, XD)),
        (RU, XD, (SP, ID, EX, XD)),
        (SE, XD, (SP, ID, EX, XD)),
        (PE, XD, (EX, XD)),
        (SP, RU, (ID, ST, RU)),
        (RU, RU, ()),
    ],
)
def test_lifecycle_paths(source: State, target: State, path: tuple[State, ...]) -> None:
    assert LIFECYCLE.path(source, target) == path
    # the path is the next hops followed one by one
    hops, state = [], source
    while state != target:
        state = LIFECYCLE.next_hop(state, target)  # type: ignore[assignment]
        hops.append(state)
    assert tuple(hops) == path


def test_an_unreachable_state_names_both_states() -> None:
    assert LIFECYCLE.next_hop(XD, RU) is None
    with pytest.raises(InvalidTransition, match=r"cannot go from <State.EXITED> to <State.RUN>"):
        LIFECYCLE.path(XD, RU)
    with pytest.raises(InvalidTransition, match="no path"):
        LIFECYCLE.path(RU, IN)


def test_a_state_outside_the_graph_is_an_invalid_transition() -> None:
    with pytest.raises(InvalidTransition, match="'nowhere' is not in <StateGraph"):
        LIFECYCLE.path(IN, "nowhere")  # type: ignore[arg-type]
    assert "nowhere" not in LIFECYCLE
    assert [] not in LIFECYCLE  # unhashable: simply not a state
    assert LIFECYCLE.next_hop(IN, IN) is None


def test_ties_go_to_the_edge_declared_first() -> None:
    diamond = StateGraph.from_edges({"A": ("B", "C"), "B": "D", "C": "D"})
    assert diamond.path("A", "D") == ("B", "D")
    mirrored = StateGraph.from_edges({"A": ("C", "B"), "B": "D", "C": "D"})
    assert mirrored.path("A", "D") == ("C", "D")


def test_from_edges_takes_lone_targets_and_keeps_strings_whole() -> None:
    graph = StateGraph.from_edges({"AB": "CD", "CD": ["EF", "AB", "EF"]})
    assert graph.edges == {"AB": ("CD",), "CD": ("EF", "AB")}
    assert graph.states == ("AB", "CD", "EF")
    assert graph.successors("CD") == ("EF", "AB")
    assert graph.successors("EF") == ()
    assert graph.initial == "AB"
    assert graph.final is None
    assert repr(graph) == "<StateGraph 3 states, 3 edges>"


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        LIFECYCLE.next_hops[IN, IN] = IN  # type: ignore[index]
    with pytest.raises(TypeError):
        LIFECYCLE.edges[IN] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        ERROR_STATES[IN] = XD  # type: ignore[index]


def test_construction_checks_the_error_map() -> None:
    with pytest.raises(InvalidTransition, match="no final state"):
        StateGraph.from_edges({"a": "b"}, errors={"a": "e"})
    with pytest.raises(InvalidTransition, match="error state 'e' cannot reach 'b'"):
        StateGraph.from_edges({"a": "b"}, errors={"a": "e"}, final="b")
    with pytest.raises(InvalidTransition, match="initial state 'z'"):
        StateGraph.from_edges({"a": "b"}, initial="z")
    with pytest.raises(InvalidTransition, match="final state 'z'"):
        StateGraph.from_edges({"a": "b"}, final="z")


def test_state_repr_and_values() -> None:
    assert repr(State.RUN) == "<State.RUN>"
    assert State("RUN") is State.RUN
    assert [state.value for state in State] == [state.name for state in State]


# -- walks: the error path, step by step ---------------------------------------------------


def drive(walk: Walk[State], failing: set[State] | None = None, limit: int = 100) -> list[State]:
    """Drive a walk as the bus does; states in ``failing`` fail each time they are entered."""
    entered: list[State] = []
    failed = False
    while (state := walk.advance(failed)) is not None:
        entered.append(state)
        failed = state in (failing or set())
        assert len(entered) < limit, f"the walk does not end: {entered}"
    return entered


def test_walk_without_failures_is_the_path() -> None:
    assert drive(LIFECYCLE.walk(IN, RU)) == [EN, ID, ST, RU]
    assert drive(LIFECYCLE.walk(RU, RU)) == []


def test_walk_raises_for_an_unreachable_target() -> None:
    with pytest.raises(InvalidTransition, match="no path"):
        LIFECYCLE.walk(XD, RU)


@pytest.mark.parametrize(
    ("source", "target", "failing", "entered"),
    [
        # magicbus: an error in START stops the bus and exits
        (IN, RU, {ST}, [EN, ID, ST, SE, SP, ID, EX, XD]),
        (IN, RU, {RU}, [EN, ID, ST, RU, SE, SP, ID, EX, XD]),
        (IN, RU, {EN}, [EN, PE, EX, XD]),
        (IN, RU, {ID}, [EN, ID, PE, EX, XD]),
        (RU, ID, {SP}, [SP, PE, EX, XD]),
        (ID, XD, {EX}, [EX, XE, XD]),
        # a failure on the error path takes its own error route, once
        (IN, RU, {ST, SP}, [EN, ID, ST, SE, SP, PE, EX, XD]),
        (IN, RU, {ST, EX}, [EN, ID, ST, SE, SP, ID, EX, XE, XD]),
        # error states and EXITED have no error route: the walk goes on, then ends
        (IN, RU, {ST, SE}, [EN, ID, ST, SE, SP, ID, EX, XD]),
        (ID, XD, {XD}, [EX, XD]),
    ],
)
def test_walk_error_routes(
    source: State, target: State, failing: set[State], entered: list[State]
) -> None:
    assert drive(LIFECYCLE.walk(source, target), failing) == entered


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s, t in itertools.product(State, State) if s == t or (s, t) in LIFECYCLE_NEXT],
)
def test_walk_ends_even_when_every_state_fails(source: State, target: State) -> None:
    entered = drive(LIFECYCLE.walk(source, target), failing=set(State))
    if entered:  # a failure anywhere ends in EXITED, or at the target if none could go on
        assert entered[-1] in (XD, target)
    assert len(entered) <= len(State) * 2


def test_walk_marks_states_entered_because_of_a_failure() -> None:
    walk = LIFECYCLE.walk(ID, RU)
    assert walk.advance() is ST
    assert (walk.via_error, walk.recovering) == (False, False)
    assert walk.advance(failed=True) is SE
    assert (walk.via_error, walk.recovering, walk.target) == (True, True, XD)
    assert walk.advance() is SP
    assert walk.via_error is False
    assert repr(walk) == "<Walk at <State.STOP> to <State.EXITED> recovering>"


def test_walk_on_a_graph_without_errors_stops_where_it_failed() -> None:
    graph = StateGraph.from_edges({"a": "b", "b": "c"})
    walk = graph.walk("a", "c")
    assert walk.advance() == "b"
    assert walk.advance(failed=True) is None
    assert walk.state == "b"


def test_walk_with_an_error_cycle_still_ends() -> None:
    # a fails -> e, e leads back through a; a failing again must not loop
    graph = StateGraph.from_edges(
        {"s": "a", "a": "z", "e": "a"}, errors={"a": "e", "e": "e"}, final="z"
    )
    entered = drive(graph.walk("s", "z"), failing={"a", "e"})  # type: ignore[arg-type]
    assert entered == ["a", "e", "a", "z"]
