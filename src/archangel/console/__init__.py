"""The management console: a telnet interface to a running app, on its own thread.

:class:`Console` listens on 127.0.0.1 (or a Unix socket), serves telnet
clients, ``nc`` and ``archangel console``, and answers from its own thread
and loop, so ``ps``, ``stack`` and ``lag`` work while the app's loop is
blocked. The package is split by concept:

* :mod:`~archangel.console.server`: the :class:`Console` lifecycle, thread and socket;
* :mod:`~archangel.console.listen`: where it listens: the loopback check and the 0600 Unix socket;
* :mod:`~archangel.console.protocol`: one connection's telnet protocol (half-close,
  flow control, the lingering close);
* :mod:`~archangel.console.session`: one session (token, command loop);
* :mod:`~archangel.console.guard`: the token throttle and the digest of warnings;
* :mod:`~archangel.console.lineedit`: line editing and history;
* :mod:`~archangel.console.commands`: the per-console command table;
* :mod:`~archangel.console.listing`, :mod:`~archangel.console.diagnostics`,
  :mod:`~archangel.console.actions`: the commands;
* :mod:`~archangel.console.apploop`: hand-offs to the app's loop and the lag probe;
* :mod:`~archangel.console.render`: formatting (stacks are walked by
  :mod:`archangel.kernel.frames`);
* :mod:`~archangel.console.client`: the ``archangel console`` line client.

The console imports the kernel and :mod:`archangel.errors` only, never the
app or the bus (``tests/test_layers.py``): it reads an app through the
attributes it duck-types.
"""

from .commands import Command as Command
from .commands import CommandError as CommandError
from .commands import Terminal as Terminal
from .server import Console as Console

__all__ = ["Command", "CommandError", "Console", "Terminal"]
