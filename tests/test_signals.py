"""The signal policy: tables, overrides, counting, real signals on a real loop."""

from __future__ import annotations

import asyncio
import signal

import pytest

from archangel import App, InvalidArgument
from archangel.service.signals import DEFAULT_POLICY, Action, Binding, SignalPolicy


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


ACCEPTED = (
    r"give an action name \(graceful, quick, immediate, reload, runlog, state, ignore\), "
    r"a callable \(called with the signal\), a bus channel's name"
)


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
        ({"hup": "gracefull"}, r"SIGHUP: 'gracefull' is not an action: did you mean 'graceful'\?"),
        ({"hup": "Reload"}, r"SIGHUP: 'Reload' is not an action: did you mean 'reload'\?"),
        ({"usr1": 3}, rf"SIGUSR1: 3 is not an action; {ACCEPTED}.*, a list or tuple of them"),
        ({"usr1": []}, rf"SIGUSR1: \[\] is not an action; {ACCEPTED}.*or None"),
        ({"usr1": {"graceful"}}, r"SIGUSR1: \{'graceful'\} is not an action"),  # no order
        ({"usr1": ""}, r"SIGUSR1: '' is neither an action \(graceful, .*\) nor a channel name"),
        ({"int": [["graceful"]]}, r"SIGINT: \['graceful'\] in \[\['graceful'\]\] is not an"),
        ({"int": ["graceful", 2]}, r"SIGINT: 2 in \['graceful', 2\] is not an action name, a"),
        ({"int": ["graceful", "qiuck"]}, r"SIGINT: 'qiuck' in .* did you mean 'quick'"),
        (["HUP"], r"overrides must be a mapping of signal to actions, not \['HUP'\]"),
    ],
)
def test_bad_policies_are_clear_errors(overrides: dict[object, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SignalPolicy(overrides)  # type: ignore[arg-type]


def test_the_app_refuses_a_bad_value_for_a_signal_naming_it() -> None:
    with pytest.raises(InvalidArgument, match=rf"SIGUSR1: 3 is not an action; {ACCEPTED}"):
        App("x", signals={"USR1": 3})
    with pytest.raises(InvalidArgument, match="'NOPE' is not a signal"):
        App("x", signals={"NOPE": print})


def test_any_signal_binds_to_a_callable_or_a_channel() -> None:
    """rel's ``signal(sig, cb)``, deadbeat's ``signal_register``, magicbus's handlers."""

    def on_usr1(sig: signal.Signals) -> None: ...

    policy = SignalPolicy(
        {"USR1": on_usr1, "HUP": "my-channel", "alrm": ["runlog", on_usr1, "ticks"]}
    )
    table = policy.table
    assert table[signal.SIGUSR1] == (on_usr1,)
    assert table[signal.SIGHUP] == ("my-channel",)
    assert table[signal.SIGALRM] == (Action.RUNLOG, on_usr1, "ticks")
    assert "SIGHUP: channel 'my-channel'" in repr(policy)
    assert (
        "SIGALRM: runlog/test_any_signal_binds_to_a_callable_or_a_channel.<locals>.on_usr1/"
        in (repr(policy))
    )
    assert [policy.action(signal.SIGALRM) for _ in range(4)] == [
        Action.RUNLOG,
        on_usr1,
        "ticks",
        "ticks",
    ]


def test_actions_as_names_members_lists_and_tuples() -> None:
    policy = SignalPolicy({"usr1": Action.STATE, "int": ("graceful", Action.IMMEDIATE)})
    assert policy.table[signal.SIGUSR1] == (Action.STATE,)
    assert policy.table[signal.SIGINT] == (Action.GRACEFUL, Action.IMMEDIATE)


async def test_real_signals_reach_the_dispatcher_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    policy = SignalPolicy()
    seen: list[tuple[signal.Signals, Binding]] = []
    got_three = asyncio.Event()

    def dispatch(sig: signal.Signals, action: Binding) -> None:
        seen.append((sig, action))
        if len(seen) == 3:
            got_three.set()

    before = {sig: signal.getsignal(sig) for sig in policy.table}
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
    # Uninstalled: the handlers from before are back (for SIGINT, Python's own
    # or the test runner's asyncio.Runner's).
    assert {sig: signal.getsignal(sig) for sig in policy.table} == before


async def test_uninstall_puts_back_the_handlers_it_replaced() -> None:
    """magicbus restores the handlers it replaced; a later SIGUSR1 must not kill the process."""
    loop = asyncio.get_running_loop()
    mine: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: mine.append(signum))
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        policy = SignalPolicy()
        policy.install(loop, lambda sig, action: None)
        policy.uninstall()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.raise_signal(signal.SIGUSR1)
        assert mine == [signal.SIGUSR1]  # a Python-level handler runs at once
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.signal(signal.SIGHUP, ignored)
