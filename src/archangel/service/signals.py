"""The signal policy: which signal does what, installed on the loop.

A policy maps each signal to a list of actions: the first delivery takes the
first action, the second the second, and so on; the last one repeats. The
defaults follow pyzenkit and what systemd and Kubernetes expect:

=========  ===============================================================
SIGINT     1st ``graceful``, 2nd ``quick``, 3rd and later ``immediate``
SIGTERM    1st ``graceful``, 2nd and later ``quick``
SIGQUIT    ``quick``
SIGHUP     ``reload``
SIGUSR1    ``runlog``
SIGUSR2    ``state``
=========  ===============================================================

SIGTERM escalates like SIGINT, but never to ``immediate``: whoever repeats a
SIGTERM (an impatient operator, a supervisor) wants the service to end soon,
and a quick stop still runs the at-exit hooks within the shutdown timeout;
a service that must die now gets SIGKILL from its manager (systemd's
``TimeoutStopSec=``), a person at a terminal a third Ctrl-C.

This module only counts and dispatches; what an action does is the App's
business (:meth:`archangel.App.handle_signal`). Handlers are installed with
``loop.add_signal_handler``, so they run on the loop, never inside a frame
that a signal interrupted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from ..errors import InvalidArgument, coerce_enum

__all__ = ["DEFAULT_POLICY", "Action", "SignalPolicy"]

logger = logging.getLogger(__name__)


class Action(enum.Enum):
    """What a signal asks the service to do."""

    GRACEFUL = "graceful"
    """Stop accepting, let processes finish within the shutdown timeout, kill the rest."""
    QUICK = "quick"
    """Kill every process now; at-exit hooks still run."""
    IMMEDIATE = "immediate"
    """Exit the OS process at once (``os._exit``); nothing more runs."""
    RELOAD = "reload"
    """Publish ``reload`` on the bus; connections stay up. Ignored unless in RUN."""
    RUNLOG = "runlog"
    """Write the runlog (counters and rates) as JSON."""
    STATE = "state"
    """Write the state (processes, bus, task stacks) as JSON."""
    IGNORE = "ignore"
    """Do nothing (the handler is still installed, so the default action is off)."""


_SpecValue: TypeAlias = str | Action | Sequence[str | Action] | None

DEFAULT_POLICY: Mapping[signal.Signals, tuple[Action, ...]] = {
    signal.SIGINT: (Action.GRACEFUL, Action.QUICK, Action.IMMEDIATE),
    signal.SIGTERM: (Action.GRACEFUL, Action.QUICK),
    signal.SIGQUIT: (Action.QUICK,),
    signal.SIGHUP: (Action.RELOAD,),
    signal.SIGUSR1: (Action.RUNLOG,),
    signal.SIGUSR2: (Action.STATE,),
}


#: Signals no handler can catch: a policy for one could never be installed.
_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})

_ACCEPTED = (
    "an action name ({known}), a list or tuple of them (one per delivery, the last "
    "repeating), or None to leave the signal alone"
)


def _signal(name: object) -> signal.Signals:
    try:
        if isinstance(name, str):
            upper = name.upper()
            sig = signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"]
        elif isinstance(name, int) and not isinstance(name, bool):
            sig = signal.Signals(name)
        else:
            raise KeyError(name)
    except (KeyError, ValueError):
        raise InvalidArgument(f"signal policy: {name!r} is not a signal") from None
    if sig in _UNCATCHABLE:
        raise InvalidArgument(f"signal policy: {sig.name} cannot be caught, so it has no policy")
    return sig


def _actions(sig: signal.Signals, value: object) -> tuple[Action, ...]:
    known = ", ".join(a.value for a in Action)
    if value is None:
        return ()
    items = [value] if isinstance(value, str | Action) else value
    if not isinstance(items, list | tuple) or not items:
        # A callable included: binding one to a signal is not supported (yet).
        raise InvalidArgument(
            f"signal policy for {sig.name}: {value!r} is not an action; give "
            + _ACCEPTED.format(known=known)
        )
    actions = []
    for item in items:
        if not isinstance(item, str | Action):
            raise InvalidArgument(
                f"signal policy for {sig.name}: {item!r} in {value!r} is not an action name; "
                f"known: {known}"
            )
        actions.append(coerce_enum(Action, item, f"signal policy for {sig.name}: action"))
    return tuple(actions)


class SignalPolicy:
    """Which action each signal takes, counting deliveries per signal.

    Args:
        overrides: Changes to :data:`DEFAULT_POLICY`, keyed by signal (number,
            ``signal.Signals`` or name like ``"HUP"``/``"SIGHUP"``); a value
            is an action name (or :class:`Action`), a non-empty list or tuple
            of them (one per delivery, the last repeating), or None to leave
            the signal alone (not installed).
        defaults: Start from :data:`DEFAULT_POLICY` (True) or from nothing.

    Raises:
        InvalidArgument: An unknown or uncatchable signal (SIGKILL, SIGSTOP), an
            unknown action, or a value of another kind (a callable, a number, a
            nested list, an empty list), named with the signal and what is
            accepted.
    """

    def __init__(
        self,
        overrides: Mapping[int | str | signal.Signals, _SpecValue] | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self._table: dict[signal.Signals, tuple[Action, ...]] = (
            dict(DEFAULT_POLICY) if defaults else {}
        )
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidArgument(
                f"signal policy: overrides must be a mapping of signal to actions, "
                f"not {overrides!r}"
            )
        for name, value in (overrides or {}).items():
            sig = _signal(name)
            actions = _actions(sig, value)
            if actions:
                self._table[sig] = actions
            else:
                self._table.pop(sig, None)
        self._counts: dict[signal.Signals, int] = {}
        self._installed: list[tuple[asyncio.AbstractEventLoop, signal.Signals]] = []

    def __repr__(self) -> str:
        table = ", ".join(
            f"{sig.name}: {'/'.join(a.value for a in acts)}" for sig, acts in self._table.items()
        )
        return f"<SignalPolicy {table}>"

    @property
    def table(self) -> Mapping[signal.Signals, tuple[Action, ...]]:
        """The signals handled and their actions, in delivery order."""
        return dict(self._table)

    def action(self, sig: signal.Signals) -> Action:
        """Count one delivery of ``sig`` and return the action it takes."""
        count = self._counts.get(sig, 0)
        self._counts[sig] = count + 1
        actions = self._table.get(sig, (Action.IGNORE,))
        return actions[min(count, len(actions) - 1)]

    def install(
        self, loop: asyncio.AbstractEventLoop, dispatch: Callable[[signal.Signals, Action], None]
    ) -> None:
        """Install a handler for each signal in the policy on ``loop``.

        ``dispatch(signal, action)`` is called on the loop for each delivery.
        Must be called from the main thread (a rule of ``add_signal_handler``).
        """
        for sig in self._table:
            loop.add_signal_handler(sig, self._deliver, sig, dispatch)
            self._installed.append((loop, sig))

    def _deliver(
        self, sig: signal.Signals, dispatch: Callable[[signal.Signals, Action], None]
    ) -> None:
        action = self.action(sig)
        logger.info("%s received (#%d): %s", sig.name, self._counts[sig], action.value)
        dispatch(sig, action)

    def uninstall(self) -> None:
        """Remove the handlers this policy installed; idempotent."""
        installed, self._installed = self._installed, []
        for loop, sig in installed:
            if not loop.is_closed():
                loop.remove_signal_handler(sig)
