"""archangel: an asyncio-native process manager.

Every connection, background task and pipeline of an asyncio service is a
process with a PID, a state and at-exit hooks, managed by a
:class:`ProcessManager`.
"""

from importlib.metadata import version as _version

from .errors import AlreadyRegistered as AlreadyRegistered
from .errors import ArchangelError as ArchangelError
from .errors import InvalidArgument as InvalidArgument
from .errors import ManagerClosed as ManagerClosed
from .errors import NotAProcess as NotAProcess
from .errors import NotRegistered as NotRegistered
from .errors import ProcessStateError as ProcessStateError
from .manager import ProcessManager as ProcessManager
from .process import ExitReason as ExitReason
from .process import Process as Process
from .process import ProcessInfo as ProcessInfo
from .process import ProcessState as ProcessState
from .task import TaskProcess as TaskProcess

__version__ = _version("archangel")

__all__ = [
    "AlreadyRegistered",
    "ArchangelError",
    "ExitReason",
    "InvalidArgument",
    "ManagerClosed",
    "NotAProcess",
    "NotRegistered",
    "Process",
    "ProcessInfo",
    "ProcessManager",
    "ProcessState",
    "ProcessStateError",
    "TaskProcess",
]
