"""The signal policy: tables, overrides, counting, real signals on a real loop."""

from __future__ import annotations

import asyncio
import signal

import pytest

from archangel import App, InvalidArgument
from archangel.service.signals import DEFAULT_POLICY, Action, SignalPolicy


def test_default_table_matches_the_design() -> None:
    table = SignalPolicy().table
    assert table == DEFAULT_POLICY
    assert table[signal.SIGINT] == (Action.GRACEFUL, Action.QUICK, Action.IMMEDIATE)
    assert table[signal.SIGTERM] == (Action.GRACEFUL, Action.QUICK)
    assert table[signal.SIGQUIT] == (Action.QUICK,)
    assert table[signal.SIGHUP] == (Action.RELOAD,)
    assert table[signal.SIGUSR1] == (Action.RUNLOG,)
    assert table[signal.SIGUSR2] == (Action.STATE,)


def test_deliveries_walk_the_list_and_the_last_repeats() -> None:
    policy = SignalPolicy()
    got = [policy.action(signal.SIGINT) for _ in range(5)]
    assert got == [
        Action.GRACEFUL,
        Action.QUICK,
        Action.IMMEDIATE,
        Action.IMMEDIATE,
        Action.IMMEDIATE,
    ]
    assert policy.action(signal.SIGTERM) is Action.GRACEFUL  # counted per signal
    # A repeated SIGTERM escalates to a quick stop, and never to an immediate exit.
    assert [policy.action(signal.SIGTERM) for _ in range(3)] == [Action.QUICK] * 3


def test_overrides_by_name_number_and_removal() -> None:
    policy = SignalPolicy({"hup": "graceful", signal.SIGUSR1: None, "SIGTERM": ["quick"]})
    table = policy.table
    assert table[signal.SIGHUP] == (Action.GRACEFUL,)
    assert table[signal.SIGTERM] == (Action.QUICK,)
    assert signal.SIGUSR1 not in table
    assert "SIGHUP: graceful" in repr(policy)
    assert SignalPolicy({"usr1": "state"}, defaults=False).table == {
        signal.SIGUSR1: (Action.STATE,)
    }


ACCEPTED = r"give an action name \(graceful, quick, immediate, reload, runlog, state, ignore\)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SIGNOPE": "graceful"}, "'SIGNOPE' is not a signal"),
        ({999: "graceful"}, "999 is not a signal"),
        ({True: "graceful"}, "True is not a signal"),  # not SIGHUP, which is 1
        ({2.0: "graceful"}, "2.0 is not a signal"),
        ({print: "graceful"}, "<built-in function print> is not a signal"),
        ({"KILL": "graceful"}, "SIGKILL cannot be caught, so it has no policy"),
        ({signal.SIGSTOP: "quick"}, "SIGSTOP cannot be caught"),
        ({"hup": "explode"}, r"SIGHUP: action must be one of 'graceful', .*, got 'explode'"),
        ({"usr1": print}, rf"SIGUSR1: <built-in function print> is not an action; {ACCEPTED}"),
        ({"usr1": 3}, rf"SIGUSR1: 3 is not an action; {ACCEPTED}, a list or tuple of them"),
        ({"usr1": []}, rf"SIGUSR1: \[\] is not an action; {ACCEPTED}.*or None"),
        ({"usr1": {"graceful"}}, r"SIGUSR1: \{'graceful'\} is not an action"),  # no order
        ({"int": [["graceful"]]}, r"SIGINT: \['graceful'\] in \[\['graceful'\]\] is not an"),
        ({"int": ["graceful", print]}, r"SIGINT: <built-in function print> in \['graceful'"),
        ({"int": ["graceful", "nope"]}, r"SIGINT: action must be one of .*, got 'nope'"),
        (["HUP"], r"overrides must be a mapping of signal to actions, not \['HUP'\]"),
    ],
)
def test_bad_policies_are_clear_errors(overrides: dict[object, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SignalPolicy(overrides)  # type: ignore[arg-type]


def test_the_app_refuses_a_callable_for_a_signal_naming_it() -> None:
    """A callable cannot be bound to a signal (yet): refused when the App is made."""
    with pytest.raises(InvalidArgument, match=rf"SIGUSR1: .*print.* is not an action; {ACCEPTED}"):
        App("x", signals={"USR1": print})


def test_actions_as_names_members_lists_and_tuples() -> None:
    policy = SignalPolicy({"usr1": Action.STATE, "int": ("graceful", Action.IMMEDIATE)})
    assert policy.table[signal.SIGUSR1] == (Action.STATE,)
    assert policy.table[signal.SIGINT] == (Action.GRACEFUL, Action.IMMEDIATE)


async def test_real_signals_reach_the_dispatcher_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    policy = SignalPolicy()
    seen: list[tuple[signal.Signals, Action]] = []
    got_three = asyncio.Event()

    def dispatch(sig: signal.Signals, action: Action) -> None:
        seen.append((sig, action))
        if len(seen) == 3:
            got_three.set()

    policy.install(loop, dispatch)
    try:
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        async with asyncio.timeout(5):
            await got_three.wait()
    finally:
        policy.uninstall()
        policy.uninstall()  # idempotent
    assert seen == [
        (signal.SIGUSR1, Action.RUNLOG),
        (signal.SIGINT, Action.GRACEFUL),
        (signal.SIGINT, Action.QUICK),
    ]
    # Uninstalled: Python's own SIGINT handler is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
