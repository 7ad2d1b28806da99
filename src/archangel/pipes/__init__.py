"""Pipes: cog pipelines and what feeds them (deadbeat on asyncio).

=====================  ======================================================
``cogs``               :class:`Cog` and the getters, setters and adapters
``pipeline``           :class:`Pipeline`: a supply, a train of cogs, a process
``train``              the train of cogs with its counters
``inbox``              a stage's bounded inbox between concurrent cogs
``supplies``           :func:`tail`, :func:`lines`, :func:`every`, the line server
``line_server``        a TCP/Unix line server whose connections feed a pipeline
``watch``              :class:`Watcher`: inotify (or polling) on files and folders
``_tail``              following one file through its rotations
``_broadcast``         a pipeline's broadcasts to its parts (``notify``)
``_copies``            the copies a copy-truncate leaves: found, ordered, measured
``_lines``             splitting bytes into lines
``_watch_backends``    inotify and polling, behind :class:`Watcher`
=====================  ======================================================

Pipes run on the kernel and the bus's timers (``tests/test_layers.py``).
"""

from .cogs import Cog as Cog
from .cogs import attrgetter as attrgetter
from .cogs import attrsetter as attrsetter
from .cogs import cog_name as cog_name
from .cogs import concurrent as concurrent
from .cogs import default_id as default_id
from .cogs import itemgetter as itemgetter
from .cogs import itemsetter as itemsetter
from .cogs import keep as keep
from .cogs import mapper as mapper
from .line_server import LineServer as LineServer
from .line_server import line_server as line_server
from .pipeline import BatchSupply as BatchSupply
from .pipeline import ErrorSink as ErrorSink
from .pipeline import Pipeline as Pipeline
from .pipeline import Supply as Supply
from .supplies import FileLine as FileLine
from .supplies import Lines as Lines
from .supplies import Tail as Tail
from .supplies import Tails as Tails
from .supplies import every as every
from .supplies import lines as lines
from .supplies import tail as tail
from .watch import Change as Change
from .watch import Watch as Watch
from .watch import Watcher as Watcher
from .watch import WatchEvent as WatchEvent
from .watch import inotify_available as inotify_available
from .watch import wait_any as wait_any

__all__ = [
    "BatchSupply",
    "Change",
    "Cog",
    "ErrorSink",
    "FileLine",
    "LineServer",
    "Lines",
    "Pipeline",
    "Supply",
    "Tail",
    "Tails",
    "Watch",
    "WatchEvent",
    "Watcher",
    "attrgetter",
    "attrsetter",
    "cog_name",
    "concurrent",
    "default_id",
    "every",
    "inotify_available",
    "itemgetter",
    "itemsetter",
    "keep",
    "line_server",
    "lines",
    "mapper",
    "tail",
    "wait_any",
]
