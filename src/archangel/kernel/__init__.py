"""The kernel: processes and the manager that keeps their table.

=================  ==========================================================
``process``        the :class:`Process` mixin, its states and exit reasons
``records``        the process table's entries and the history of exits
``manager``        :class:`ProcessManager`: PIDs, the table, kill, shutdown
``adopt``          making a foreign protocol (aiohttp's, uvicorn's) a process
``task``           :class:`TaskProcess`: a coroutine run as a process
``childspec``      :class:`ChildSpec`, restart types, strategies, :data:`IGNORE`
``supervisor``     :class:`Supervisor`: OTP restarts over child processes
``_children``      a supervisor's table of children: lookup, stop last first
``frames``         where code is: stacks and await chains, read from any thread
``slices``         :class:`~archangel.kernel.slices.TimeSlice`: long work on a loop in small steps
``holders``        background-task holders and waiter lists, off the hot path
``loop_tasks``     every asyncio task of a loop, copied cheaply, read from any thread
``signames``       the signal names an operator types (``archangel signal``, the console)
=================  ==========================================================

The kernel imports :mod:`archangel.errors` only (``tests/test_layers.py``).
"""

from .adopt import AdoptedBufferedProtocol as AdoptedBufferedProtocol
from .adopt import AdoptedProtocol as AdoptedProtocol
from .adopt import AiohttpConnection as AiohttpConnection
from .adopt import ConnectionProcess as ConnectionProcess
from .adopt import adopt as adopt
from .manager import History as History
from .manager import ProcessManager as ProcessManager
from .process import ExitReason as ExitReason
from .process import Process as Process
from .process import ProcessInfo as ProcessInfo
from .process import ProcessState as ProcessState
from .supervisor import IGNORE as IGNORE
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Restart as Restart
from .supervisor import Strategy as Strategy
from .supervisor import Supervisor as Supervisor
from .task import TaskProcess as TaskProcess

__all__ = [
    "IGNORE",
    "AdoptedBufferedProtocol",
    "AdoptedProtocol",
    "AiohttpConnection",
    "ChildSpec",
    "ConnectionProcess",
    "ExitReason",
    "History",
    "Process",
    "ProcessInfo",
    "ProcessManager",
    "ProcessState",
    "Restart",
    "Strategy",
    "Supervisor",
    "TaskProcess",
    "adopt",
]
