"""archangel: an asyncio-native process manager.

Every connection, background task and pipeline of an asyncio service is a
process with a PID, a state and at-exit hooks, managed by a
:class:`ProcessManager`; an :class:`App` runs them as a service.
"""

from importlib.metadata import version as _version

from .app import App as App
from .bus import STOP as STOP
from .bus import Bus as Bus
from .cogs import Cog as Cog
from .errors import AlreadyRegistered as AlreadyRegistered
from .errors import ArchangelError as ArchangelError
from .errors import ChannelFailures as ChannelFailures
from .errors import ConsoleError as ConsoleError
from .errors import DaemonError as DaemonError
from .errors import InvalidArgument as InvalidArgument
from .errors import InvalidTransition as InvalidTransition
from .errors import ManagerClosed as ManagerClosed
from .errors import NotAProcess as NotAProcess
from .errors import NotRegistered as NotRegistered
from .errors import PidFileError as PidFileError
from .errors import ProcessStateError as ProcessStateError
from .errors import ReadOnlyAttribute as ReadOnlyAttribute
from .errors import RestartLimitExceeded as RestartLimitExceeded
from .errors import WatcherClosed as WatcherClosed
from .manager import ProcessManager as ProcessManager
from .pipeline import Pipeline as Pipeline
from .process import ExitReason as ExitReason
from .process import Process as Process
from .process import ProcessInfo as ProcessInfo
from .process import ProcessState as ProcessState
from .states import State as State
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Supervisor as Supervisor
from .task import TaskProcess as TaskProcess

__version__ = _version("archangel")

__all__ = [
    "STOP",
    "AlreadyRegistered",
    "App",
    "ArchangelError",
    "Bus",
    "ChannelFailures",
    "ChildSpec",
    "Cog",
    "ConsoleError",
    "DaemonError",
    "ExitReason",
    "InvalidArgument",
    "InvalidTransition",
    "ManagerClosed",
    "NotAProcess",
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
]
