"""archangel: an asyncio-native process manager.

Every connection, background task and pipeline of an asyncio service is a
process with a PID, a state and at-exit hooks, managed by a
:class:`ProcessManager`; an :class:`App` runs them as a service.

The package is one folder per layer; imports point down only, and
``tests/test_layers.py`` keeps it so:

=====================  ====================================================
``cli``, ``demo``      entry points (nothing imports them)
``app``                :class:`App`: wires the layers below into a service
``console/``           the telnet console on its own thread (reads the kernel)
``web/``               metrics and health probes over HTTP, on their own thread
``service/``           signals, dumps, pidfile, daemon, systemd, serving
``pipes/``             cogs, pipelines, supplies (tail, lines), watch
``kernel/``            Process, ProcessManager, adoption, tasks, Supervisor
``bus/``               states, channels, timers, Bus (beside the kernel)
``errors``             the error family, at the bottom
=====================  ====================================================
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from .app import App as App
from .bus.bus import STOP as STOP
from .bus.bus import Bus as Bus
from .bus.states import State as State
from .errors import AlreadyRegistered as AlreadyRegistered
from .errors import ArchangelError as ArchangelError
from .errors import ChannelFailures as ChannelFailures
from .errors import ChildNotFound as ChildNotFound
from .errors import ConsoleError as ConsoleError
from .errors import DaemonError as DaemonError
from .errors import DuplicateChild as DuplicateChild
from .errors import InvalidArgument as InvalidArgument
from .errors import InvalidTransition as InvalidTransition
from .errors import ManagerClosed as ManagerClosed
from .errors import NotAProcess as NotAProcess
from .errors import NotCallable as NotCallable
from .errors import NotRegistered as NotRegistered
from .errors import PidFileError as PidFileError
from .errors import ProcessStateError as ProcessStateError
from .errors import ReadOnlyAttribute as ReadOnlyAttribute
from .errors import RestartLimitExceeded as RestartLimitExceeded
from .errors import WatcherClosed as WatcherClosed
from .errors import WebError as WebError
from .kernel.manager import ProcessManager as ProcessManager
from .kernel.process import ExitReason as ExitReason
from .kernel.process import Process as Process
from .kernel.process import ProcessInfo as ProcessInfo
from .kernel.process import ProcessState as ProcessState
from .kernel.supervisor import IGNORE as IGNORE
from .kernel.supervisor import ChildSpec as ChildSpec
from .kernel.supervisor import Supervisor as Supervisor
from .kernel.task import TaskProcess as TaskProcess
from .pipes.cogs import Cog as Cog
from .pipes.pipeline import Pipeline as Pipeline

try:
    __version__ = _version("archangel-asyncio")  # the distribution name (pyproject.toml)
except _NotInstalled:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "IGNORE",
    "STOP",
    "AlreadyRegistered",
    "App",
    "ArchangelError",
    "Bus",
    "ChannelFailures",
    "ChildNotFound",
    "ChildSpec",
    "Cog",
    "ConsoleError",
    "DaemonError",
    "DuplicateChild",
    "ExitReason",
    "InvalidArgument",
    "InvalidTransition",
    "ManagerClosed",
    "NotAProcess",
    "NotCallable",
    "NotRegistered",
    "PidFileError",
    "Pipeline",
    "Process",
    "ProcessInfo",
    "ProcessManager",
    "ProcessState",
    "ProcessStateError",
    "ReadOnlyAttribute",
    "RestartLimitExceeded",
    "State",
    "Supervisor",
    "TaskProcess",
    "WatcherClosed",
    "WebError",
]
