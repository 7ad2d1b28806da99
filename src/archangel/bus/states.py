"""The lifecycle state machine as plain data: states, edges, shortest paths, error routes.

This module is pure: no asyncio, no I/O, no logging. :class:`archangel.bus.Bus`
drives it and publishes what it says; tests drive it without a loop, and the
documentation draws its picture from the same tables.

The rules, after h11's ``_state.py``:

* Everything that decides which state follows which lives here, as data
  (:data:`LIFECYCLE_EDGES`, :data:`ERROR_STATES`) plus the two small pieces of
  code that read it: :class:`StateGraph` (the next-hop table) and :class:`Walk`
  (one transition, step by step). The bus never picks a state on its own.
* A transition follows a shortest path. Among equally short paths the one a
  breadth-first search finds first wins, following each state's edges in the
  order they were declared, so every route is deterministic.
* A failure while publishing a state ``S`` sends the walk to ``errors[S]`` and
  from there along the shortest path to the graph's ``final`` state. A walk
  enters each error state at most once, so a failure on the error path itself
  can neither loop nor bounce back; it is recorded and the walk goes on.
* A missing entry is the error: asking for a path that does not exist raises
  :class:`~archangel.errors.InvalidTransition` naming both states.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Generic, TypeVar, cast

from ..errors import InvalidTransition

__all__ = [
    "ERROR_STATES",
    "LIFECYCLE",
    "LIFECYCLE_EDGES",
    "State",
    "StateGraph",
    "Walk",
]

S = TypeVar("S", bound=Hashable)


class State(enum.Enum):
    """The states of a service's lifecycle, after magicbus's ``ProcessBus``.

    Each state is also the bus channel published on entering it: subscribe with
    ``@bus.on(State.START)``. ``START`` and ``STOP`` are the work of starting and
    stopping; ``RUN`` and ``IDLE`` are the resting states between them.
    """

    INITIAL = "INITIAL"
    ENTER = "ENTER"
    IDLE = "IDLE"
    START = "START"
    RUN = "RUN"
    STOP = "STOP"
    EXIT = "EXIT"
    EXITED = "EXITED"
    START_ERROR = "START_ERROR"
    STOP_ERROR = "STOP_ERROR"
    EXIT_ERROR = "EXIT_ERROR"

    def __repr__(self) -> str:
        return f"<State.{self.name}>"


class StateGraph(Generic[S]):
    """A directed graph of states with its shortest-path next-hop table.

    Immutable once built. ``next_hop(a, z)`` is one dictionary lookup; the
    table is computed once, by a breadth-first search from every state.

    Args:
        edges: For each state, the states it may move to, in preference order.
        errors: For each state, the error state a failure in it leads to.
        initial: Where a bus on this graph starts; defaults to the first state.
        final: Where the error path ends; required when ``errors`` is given.

    Raises:
        InvalidTransition: ``initial`` or ``final`` is not a state of the graph,
            or an error state cannot reach ``final``.
    """

    __slots__ = ("_edges", "_errors", "_final", "_initial", "_next", "_states")

    def __init__(
        self,
        edges: Mapping[S, Sequence[S]],
        *,
        errors: Mapping[S, S] | None = None,
        initial: S | None = None,
        final: S | None = None,
    ) -> None:
        normal: dict[S, tuple[S, ...]] = {}
        states: dict[S, None] = {}  # an ordered set: first appearance wins
        for source, targets in edges.items():
            states.setdefault(source)
            normal[source] = tuple(dict.fromkeys(targets))
            for target in normal[source]:
                states.setdefault(target)
        errors = dict(errors or {})
        for source, error in errors.items():
            states.setdefault(source)
            states.setdefault(error)
        self._edges: Mapping[S, tuple[S, ...]] = MappingProxyType(normal)
        self._errors: Mapping[S, S] = MappingProxyType(errors)
        self._states = tuple(states)
        self._next: Mapping[tuple[S, S], S] = MappingProxyType(_next_hops(normal, self._states))
        if initial is None and self._states:
            initial = self._states[0]
        self._initial = initial
        self._final = final
        for name, state in (("initial", initial), ("final", final)):
            if state is not None and state not in states:
                raise InvalidTransition(f"{name} state {state!r} is not a state of {self!r}")
        if errors and final is None:
            raise InvalidTransition(f"{self!r} has error states but no final state to reach")
        for error in errors.values():
            if error != final and (error, final) not in self._next:
                raise InvalidTransition(f"error state {error!r} cannot reach {final!r}")

    @classmethod
    def from_edges(
        cls,
        edges: Mapping[S, S | Sequence[S]],
        *,
        errors: Mapping[S, S] | None = None,
        initial: S | None = None,
        final: S | None = None,
    ) -> StateGraph[S]:
        """Build a graph from ``{a: (b, c), …}``; a lone target need not be in a tuple.

        ``{"A": "B", "B": ("C", "D")}`` declares three edges: A→B, B→C and B→D.
        The keyword arguments are those of :class:`StateGraph`.
        """
        normal = {
            source: cast("Sequence[S]", targets)
            if isinstance(targets, tuple | list)
            else (cast(S, targets),)
            for source, targets in edges.items()
        }
        return cls(normal, errors=errors, initial=initial, final=final)

    @property
    def states(self) -> tuple[S, ...]:
        """Every state, in order of first appearance in the edges, then the error map."""
        return self._states

    @property
    def edges(self) -> Mapping[S, tuple[S, ...]]:
        """The normal edges, each state's successors in declared order."""
        return self._edges

    @property
    def errors(self) -> Mapping[S, S]:
        """The error map, from each state to the error state a failure in it leads to."""
        return self._errors

    @property
    def initial(self) -> S | None:
        """The state a bus on this graph starts in (None for an empty graph)."""
        return self._initial

    @property
    def final(self) -> S | None:
        """The state the error path ends in (None if the graph has no error map)."""
        return self._final

    @property
    def next_hops(self) -> Mapping[tuple[S, S], S]:
        """The table ``{(a, z): b}``, where b is the first step from a towards z.

        A pair that is missing has no path. Pairs ``(a, a)`` are never present:
        staying put is not a move.
        """
        return self._next

    def successors(self, state: S) -> tuple[S, ...]:
        """The states one normal edge away from ``state``, in declared order."""
        return self._edges.get(state, ())

    def next_hop(self, source: S, target: S) -> S | None:
        """The first state after ``source`` on the shortest path to ``target``, or None."""
        return self._next.get((source, target))

    def path(self, source: S, target: S) -> tuple[S, ...]:
        """The states after ``source`` up to and including ``target``.

        Returns ``()`` when ``source == target``.

        Raises:
            InvalidTransition: ``target`` cannot be reached from ``source``.
        """
        for state in (source, target):
            if state not in self:
                raise InvalidTransition(
                    f"cannot go from {source!r} to {target!r}: {state!r} is not in {self!r}"
                )
        steps: list[S] = []
        state = source
        while state != target:
            hop = self._next.get((state, target))
            if hop is None:
                raise InvalidTransition(f"cannot go from {source!r} to {target!r}: no path")
            steps.append(hop)
            state = hop
        return tuple(steps)

    def walk(self, source: S, target: S) -> Walk[S]:
        """Start a :class:`Walk` from ``source`` to ``target`` (see there)."""
        return Walk(self, source, target)

    def __contains__(self, state: object) -> bool:
        try:
            return state in self._states
        except TypeError:  # unhashable: certainly not a state
            return False

    def __repr__(self) -> str:
        count = sum(len(targets) for targets in self._edges.values())
        return f"<StateGraph {len(self._states)} states, {count} edges>"


class Walk(Generic[S]):
    """One transition in progress: which state to enter next, given how the last went.

    The driver calls :meth:`advance` with ``failed=False`` to get the first
    state, publishes it, then reports the outcome with the next call; ``None``
    means the walk is over. Pure bookkeeping: nothing here runs subscribers.

    Args:
        graph: The graph to walk on.
        source: The current state.
        target: The state to reach.

    Raises:
        InvalidTransition: ``target`` cannot be reached from ``source``.
    """

    __slots__ = ("_graph", "_used", "recovering", "state", "target", "via_error")

    def __init__(self, graph: StateGraph[S], source: S, target: S) -> None:
        graph.path(source, target)  # raises if there is no way there
        self._graph = graph
        self._used: set[S] = set()
        #: The state most recently entered (``source`` before the first step).
        self.state: S = source
        #: Where the walk is going, the requested state or ``final`` once recovering.
        self.target: S = target
        #: True once a failure has sent the walk down the error path.
        self.recovering = False
        #: True when the current state was entered because of a failure.
        self.via_error = False

    def advance(self, failed: bool = False) -> S | None:
        """Report how publishing the current state went; get the state to enter next.

        Args:
            failed: Whether a subscriber of the current state failed.

        Returns:
            The next state, or None when the walk is over; the target (or, after
            a failure, the final state) is reached, or a failure happened in a
            state that has no error state to go to while not already recovering.
        """
        graph = self._graph
        self.via_error = False
        if failed:
            error = graph.errors.get(self.state)
            if error is not None and error not in self._used:
                self._used.add(error)
                self.recovering = True
                self.via_error = True
                self.target = cast(S, graph.final)
                self.state = error
                return error
            if not self.recovering:
                return None
        if self.state == self.target:
            return None
        hop = graph.next_hop(self.state, self.target)
        assert hop is not None, "a walk only moves towards a reachable target"
        self.state = hop
        return hop

    def __repr__(self) -> str:
        mode = " recovering" if self.recovering else ""
        return f"<Walk at {self.state!r} to {self.target!r}{mode}>"


def _next_hops(edges: Mapping[S, tuple[S, ...]], states: Sequence[S]) -> dict[tuple[S, S], S]:
    """The next-hop table, by one breadth-first search per source state."""
    table: dict[tuple[S, S], S] = {}
    for source in states:
        first: dict[S, S] = {}  # reached state -> the first hop that led there
        queue: deque[S] = deque()
        for hop in edges.get(source, ()):
            if hop != source and hop not in first:
                first[hop] = hop
                queue.append(hop)
        while queue:
            state = queue.popleft()
            for succ in edges.get(state, ()):
                if succ != source and succ not in first:
                    first[succ] = first[state]
                    queue.append(succ)
        for target, hop in first.items():
            table[source, target] = hop
    return table


#: The lifecycle's normal edges (magicbus's ``ProcessBus`` transitions).
#: Error edges are not here: a transition never chooses an error state.
LIFECYCLE_EDGES: Mapping[State, tuple[State, ...]] = MappingProxyType(
    {
        State.INITIAL: (State.ENTER,),
        State.ENTER: (State.IDLE,),
        State.IDLE: (State.START, State.EXIT),
        State.START: (State.RUN, State.STOP),
        State.RUN: (State.STOP,),
        State.STOP: (State.IDLE,),
        State.EXIT: (State.EXITED,),
        State.START_ERROR: (State.STOP,),
        State.STOP_ERROR: (State.EXIT,),
        State.EXIT_ERROR: (State.EXITED,),
    }
)

#: Where a failure while publishing each state leads.
ERROR_STATES: Mapping[State, State] = MappingProxyType(
    {
        State.ENTER: State.STOP_ERROR,
        State.IDLE: State.STOP_ERROR,
        State.START: State.START_ERROR,
        State.RUN: State.START_ERROR,
        State.STOP: State.STOP_ERROR,
        State.EXIT: State.EXIT_ERROR,
    }
)

#: The lifecycle graph, which starts at ``INITIAL`` and whose error path ends at ``EXITED``.
LIFECYCLE: StateGraph[State] = StateGraph(
    LIFECYCLE_EDGES, errors=ERROR_STATES, initial=State.INITIAL, final=State.EXITED
)
