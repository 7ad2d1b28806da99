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

An entry may also be a callable, called on the loop with the signal (a
coroutine function's coroutine runs as a task), or the name of a bus channel,
published with the signal (rel's ``signal(sig, cb)``, deadbeat's
``signal_register``, magicbus's handlers): ``{"USR1": dump_caches}``,
``{"HUP": "config-changed"}``. A string that is an action's name is the
action; one that is nearly one (``"gracefull"``) is refused as a likely typo.

SIGTERM escalates like SIGINT, but never to ``immediate``: whoever repeats a
SIGTERM (an impatient operator, a supervisor) wants the service to end soon,
and a quick stop still runs the at-exit hooks within the shutdown timeout;
a service that must die now gets SIGKILL from its manager (systemd's
``TimeoutStopSec=``), a person at a terminal a third Ctrl-C.

This module only counts and dispatches; what an entry does is the App's
business (:meth:`archangel.App.handle_signal`). Handlers are installed with
``loop.add_signal_handler``, so they run on the loop, never inside a frame
that a signal interrupted; :meth:`SignalPolicy.uninstall` puts back the
handlers that were there before (what ``signal.getsignal`` said), as magicbus
does, so a program that runs an App and goes on keeps its own handlers.
"""

from __future__ import annotations

import asyncio
import difflib
import enum
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from ..errors import InvalidArgument

__all__ = ["DEFAULT_POLICY", "Action", "Binding", "SignalPolicy"]

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


#: What one delivery of a signal does: an :class:`Action`, a callable (called
#: with the ``signal.Signals``), or the name of a bus channel (published with it).
Binding: TypeAlias = Action | str | Callable[[signal.Signals], Any]

_SpecValue: TypeAlias = Binding | Sequence[Binding] | None

#: The actions each signal takes, one per delivery (the last repeating), unless
#: a ``SignalPolicy`` override changes them.
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
    "an action name ({known}), a callable (called with the signal), a bus channel's "
    "name (published with the signal), a list or tuple of them (one per delivery, "
    "the last repeating), or None to leave the signal alone"
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


def _bindings(sig: signal.Signals, value: object) -> tuple[Binding, ...]:
    known = ", ".join(a.value for a in Action)
    if value is None:
        return ()
    items = [value] if isinstance(value, str | Action) or callable(value) else value
    if not isinstance(items, list | tuple) or not items:
        raise InvalidArgument(
            f"signal policy for {sig.name}: {value!r} is not an action; give "
            + _ACCEPTED.format(known=known)
        )
    return tuple(_binding(sig, item, value, known) for item in items)


def _binding(sig: signal.Signals, item: object, value: object, known: str) -> Binding:
    where = f"signal policy for {sig.name}: {item!r}" + (
        f" in {value!r}" if item is not value else ""
    )
    if isinstance(item, Action):
        return item
    if isinstance(item, str):
        try:
            return Action(item)
        except ValueError:
            pass
        if not item.strip():
            raise InvalidArgument(f"{where} is neither an action ({known}) nor a channel name")
        near = difflib.get_close_matches(item.lower(), [a.value for a in Action], n=1, cutoff=0.75)
        if near:
            raise InvalidArgument(
                f"{where} is not an action: did you mean {near[0]!r}? (known: {known}; to "
                f"publish on a channel named {item!r}, bind a callable that emits it)"
            )
        return item  # a bus channel
    if callable(item):
        return item
    raise InvalidArgument(
        f"{where} is not an action name, a callable or a channel name; known actions: {known}"
    )


def _describe(binding: Binding) -> str:
    if isinstance(binding, Action):
        return binding.value
    if isinstance(binding, str):
        return f"channel {binding!r}"
    return getattr(binding, "__qualname__", None) or repr(binding)


#: What ``signal.getsignal`` returns: the handler a policy replaced, to put back.
_Previous: TypeAlias = Callable[[int, Any], Any] | int | signal.Handlers | None


class SignalPolicy:
    """What each signal does, counting deliveries per signal.

    Args:
        overrides: Changes to :data:`DEFAULT_POLICY`, keyed by signal (number,
            ``signal.Signals`` or name like ``"HUP"``/``"SIGHUP"``/``"alrm"``);
            a value is a :data:`Binding` (an action name or :class:`Action`, a
            callable, or a bus channel's name), a non-empty list or tuple of
            them (one per delivery, the last repeating), or None to leave the
            signal alone (not installed).
        defaults: Start from :data:`DEFAULT_POLICY` (True) or from nothing.

    Raises:
        InvalidArgument: An unknown or uncatchable signal (SIGKILL, SIGSTOP), a
            string that is nearly an action's name (a typo), or a value of
            another kind (a number, a set, a nested list, an empty list, an
            empty string), named with the signal and what is accepted.
    """

    def __init__(
        self,
        overrides: Mapping[int | str | signal.Signals, _SpecValue] | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self._table: dict[signal.Signals, tuple[Binding, ...]] = (
            dict(DEFAULT_POLICY) if defaults else {}
        )
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidArgument(
                f"signal policy: overrides must be a mapping of signal to actions, "
                f"not {overrides!r}"
            )
        for name, value in (overrides or {}).items():
            sig = _signal(name)
            bindings = _bindings(sig, value)
            if bindings:
                self._table[sig] = bindings
            else:
                self._table.pop(sig, None)
        self._counts: dict[signal.Signals, int] = {}
        self._installed: list[tuple[asyncio.AbstractEventLoop, signal.Signals, _Previous]] = []

    def __repr__(self) -> str:
        table = ", ".join(
            f"{sig.name}: {'/'.join(map(_describe, entries))}"
            for sig, entries in self._table.items()
        )
        return f"<SignalPolicy {table}>"

    @property
    def table(self) -> Mapping[signal.Signals, tuple[Binding, ...]]:
        """The signals handled and what each delivery does, in delivery order."""
        return dict(self._table)

    def action(self, sig: signal.Signals) -> Binding:
        """Count one delivery of ``sig`` and return what it does (an :class:`Action` or other)."""
        count = self._counts.get(sig, 0)
        self._counts[sig] = count + 1
        entries = self._table.get(sig, (Action.IGNORE,))
        return entries[min(count, len(entries) - 1)]

    def install(
        self, loop: asyncio.AbstractEventLoop, dispatch: Callable[[signal.Signals, Binding], None]
    ) -> None:
        """Install a handler for each signal in the policy on ``loop``.

        ``dispatch(signal, binding)`` is called on the loop for each delivery.
        The handler each signal had (``signal.getsignal``) is kept for
        :meth:`uninstall` to put back. Must be called from the main thread (a
        rule of ``add_signal_handler``).
        """
        for sig in self._table:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._deliver, sig, dispatch)
            self._installed.append((loop, sig, previous))

    def _deliver(
        self, sig: signal.Signals, dispatch: Callable[[signal.Signals, Binding], None]
    ) -> None:
        binding = self.action(sig)
        logger.info("%s received (#%d): %s", sig.name, self._counts[sig], _describe(binding))
        dispatch(sig, binding)

    def uninstall(self) -> None:
        """Remove the handlers this policy installed and put back the ones they replaced.

        A handler set with ``signal.signal`` (or ``SIG_IGN``, ``SIG_DFL``) before
        :meth:`install` is in place again afterwards (magicbus does the same).
        One that another part set with the same loop's ``add_signal_handler``
        is not: a loop keeps one handler per signal, and installing replaced it.
        Idempotent; call it from the main thread.
        """
        installed, self._installed = self._installed, []
        for loop, sig, previous in reversed(installed):
            if not loop.is_closed():
                loop.remove_signal_handler(sig)
            if previous is None:  # not installed from Python: nothing to put back
                continue
            try:
                signal.signal(sig, previous)
            except (ValueError, OSError, TypeError) as exc:  # not the main thread, say
                logger.warning("could not put back the %s handler %r: %s", sig.name, previous, exc)
