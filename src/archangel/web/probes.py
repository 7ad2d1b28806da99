"""``/livez`` and ``/readyz``: what the health probes answer, as plain functions.

Kubernetes restarts a pod whose liveness probe fails and stops routing to
one whose readiness probe fails; these decide both, from what the web's
thread can read without the app's loop. No I/O here: the server turns the
``(ok, text)`` answers into 200 or 503.

* live: the web side's own lag watch is ticking, and the app's loop has
  answered a probe within ``live_threshold`` seconds (a loop blocked
  longer is stuck: restarting the process is the cure);
* ready: the App is in RUN and no stop has been asked for, so a SIGTERM
  turns it unready at once, before its connections drain.
"""

from __future__ import annotations

import time
from typing import Any

from ..console.render import format_ms
from .target import lifecycle
from .watch import LoopWatch

__all__ = ["live", "ready"]

#: A watch whose last tick is older than this many tick intervals has stopped.
_STALE_TICKS = 20


def live(watch: LoopWatch, live_threshold: float) -> tuple[bool, str]:
    """Whether the process is alive: the web side ticks and the app loop answers."""
    since = time.monotonic() - watch.heartbeat
    if since > max(1.0, _STALE_TICKS * watch.tick_interval):
        return False, f"not live: the web side's lag watch has not run for {format_ms(since)}"
    blocked = watch.apploop.blocked_for
    if blocked > live_threshold:
        return False, (
            f"not live: the app loop has been blocked for {format_ms(blocked)} "
            f"(more than {live_threshold:g} s)"
        )
    lags = list(watch.apploop.lags)
    last = f"last probe's lag {format_ms(lags[-1][1])}" if lags else "no probe answered yet"
    return True, f"live: the app loop answers ({last})"


def ready(app: Any) -> tuple[bool, str]:
    """Whether to route traffic here: the App is in RUN and not stopping.

    A bare manager (no App) has no lifecycle: it is ready while it runs.
    """
    if app is None:
        return True, "ready: a manager without a lifecycle"
    state, _, stopping = lifecycle(app)
    if state is None:
        return True, "ready: the app has no lifecycle state"
    if stopping:
        return False, f"not ready: stopping (state {state})"
    if state != "RUN":
        return False, f"not ready: state {state}, ready only in RUN"
    return True, "ready: state RUN"
