"""Service: what runs an App as a service, on the kernel and the bus.

=================  ==========================================================
``signals``        the signal policy: which signal does what
``dumps``          state and runlog dumps, written without stalling the loop
``statistics``     every counter nested, pyzenkit's ``calc_statistics`` rates
``pidfile``        :class:`PidFile`: a locked pidfile and its readers
``sidecar``        beside the pidfile, where the console listens (for ``status``)
``daemon``         daemonizing and dropping privileges
``systemd``        sd_notify, the watchdog and socket activation
``serving``        the base of the framework glue below
``frameworks``     aiohttp and websockets servers, every connection a process
``asgi``           ASGI applications through uvicorn
``streams``        ``asyncio.start_server``-style stream handlers
``workers``        the prefork master: ``App.run(workers=N)``
``broker``         the master binds, every worker serves the same socket
=================  ==========================================================
"""

from . import systemd as systemd
from .daemon import DaemonHandle as DaemonHandle
from .daemon import daemonize as daemonize
from .daemon import drop_privileges as drop_privileges
from .dumps import Runlog as Runlog
from .pidfile import PidFile as PidFile
from .pidfile import check as check
from .pidfile import read_pid as read_pid
from .pidfile import send_signal as send_signal
from .signals import DEFAULT_POLICY as DEFAULT_POLICY
from .signals import Action as Action
from .signals import SignalPolicy as SignalPolicy
from .statistics import Statistics as Statistics
from .statistics import calc_statistics as calc_statistics

__all__ = [
    "DEFAULT_POLICY",
    "Action",
    "DaemonHandle",
    "PidFile",
    "Runlog",
    "SignalPolicy",
    "Statistics",
    "calc_statistics",
    "check",
    "daemonize",
    "drop_privileges",
    "read_pid",
    "send_signal",
    "systemd",
]
