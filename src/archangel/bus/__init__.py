"""The bus: a pub/sub state machine beside the kernel.

=================  ==========================================================
``states``         the lifecycle's states and edges as tables; :class:`StateGraph`
``channels``       named channels of prioritised subscribers
``queue``          the bus's event queue (pyzenkit's), with cancellable events
``timers``         drift-free timers
``bus``            :class:`Bus`: channels, a state graph and timers together
=================  ==========================================================

The bus imports :mod:`archangel.errors` only (``tests/test_layers.py``).
"""

from .bus import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from .bus import STOP as STOP
from .bus import Bus as Bus
from .bus import Callback as Callback
from .bus import TransitionResults as TransitionResults
from .queue import EventQueue as EventQueue
from .queue import ScheduledEvent as ScheduledEvent
from .queue import Scheduler as Scheduler
from .states import ERROR_STATES as ERROR_STATES
from .states import LIFECYCLE as LIFECYCLE
from .states import LIFECYCLE_EDGES as LIFECYCLE_EDGES
from .states import State as State
from .states import StateGraph as StateGraph
from .states import Walk as Walk
from .timers import Timer as Timer

__all__ = [
    "DEFAULT_PRIORITY",
    "ERROR_STATES",
    "LIFECYCLE",
    "LIFECYCLE_EDGES",
    "STOP",
    "Bus",
    "Callback",
    "EventQueue",
    "ScheduledEvent",
    "Scheduler",
    "State",
    "StateGraph",
    "Timer",
    "TransitionResults",
    "Walk",
]
