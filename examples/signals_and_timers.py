"""Signals bound to your own code, a cancellable event queue, a timer that re-arms.

What a user of rel, deadbeat, pyzenkit, magicbus or mode reaches for, in one
service that drives itself and stops (``python examples/signals_and_timers.py
[--loop asyncio]``)::

    SIGUSR1 -> a callback, SIGHUP -> the "config-changed" bus channel
    a timeout scheduled on the bus and cancelled once the answer came
    an event piped through a callback chain (each subscriber gets the last result)
    a poll timer that runs at once, is cancelled, and is re-armed with a new delay

Send it ``SIGUSR1`` or ``SIGHUP`` yourself while it runs to see the bindings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from archangel import STOP, App, State


def on_usr1(sig: signal.Signals) -> None:
    print(f"callback: {sig.name}")


app = App("signals-and-timers", signals={"USR1": on_usr1, "HUP": "config-changed"})
bus = app.bus
seen = asyncio.Event()


@bus.on("config-changed")
def reread(sig: signal.Signals) -> None:
    print(f"channel config-changed: {sig.name}")
    seen.set()


# pyzenkit's callback chain: each subscriber gets what the one before returned.
bus.subscribe("event", lambda raw: raw.strip(), priority=10)
bus.subscribe("event", lambda text: STOP if not text else text.upper(), priority=20)
bus.subscribe("event", lambda text: print(f"chain: {text}"), priority=30)
bus.subscribe("timeout", lambda what: print(f"timed out: {what}"))


@bus.on(State.RUN)
async def demo() -> None:
    # Signals: raised here so the example runs on its own.
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGHUP)
    await seen.wait()

    # A timeout on the event queue, dequeued once the answer came (deadbeat's dequeue).
    timeout = bus.schedule_after(30, "timeout", "the answer")
    due = bus.next_due
    assert due is not None
    print(f"queued: {bus.queued}, next due in {due - asyncio.get_running_loop().time():.0f} s")
    print(f"answer came; cancelled: {timeout.cancel()}, queued: {bus.queued}")

    bus.schedule("event", "  hello  ", pipe=True)
    bus.schedule("event", "   ", pipe=True)  # stripped to nothing: the chain stops

    # mode's exec_first (delay=0), then rel's re-arming with a new delay.
    polled = asyncio.Queue[int]()

    def poll() -> bool:
        polled.put_nowait(timer.ticks)
        print(f"poll {timer.ticks}")
        return True

    timer = bus.every(3600, poll, delay=0)  # the first call at once, not in an hour
    await polled.get()
    timer.cancel()
    print(f"cancelled after {timer.ticks} poll")
    timer.rearm(0.01)  # armed again: in 10 ms, then hourly
    await polled.get()
    timer.rearm(0)  # and once more, at once
    await polled.get()
    timer.cancel()
    app.request_stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    sys.exit(app.run(loop=parser.parse_args().loop))
