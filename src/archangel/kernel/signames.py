"""The signals an operator sends a service, by the names they type.

One table for ``archangel signal`` (the command line) and the console's
``signal`` command, so both take the same names in any spelling: ``TERM``,
``SIGTERM``, ``term``. ``check`` (signal 0) only tests that the process runs.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

__all__ = ["MASTER_SIGNALS", "SIGNALS", "SIGNAL_NAMES", "signal_key"]

#: The signals an App binds (stop, reload, dumps...), by lower-case short name.
SIGNALS: dict[str, int] = {
    "int": signal.SIGINT,
    "term": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "hup": signal.SIGHUP,
    "usr1": signal.SIGUSR1,
    "usr2": signal.SIGUSR2,
    "alrm": signal.SIGALRM,
    "check": 0,
}

#: What a master of workers takes besides (``archangel signal``): one worker more,
#: fewer, and the master's upgrade (URG). Not in :data:`SIGNALS`: an App binds none,
#: and TTIN or TTOU would stop it (their default action).
MASTER_SIGNALS: dict[str, int] = {
    "ttin": signal.SIGTTIN,
    "ttou": signal.SIGTTOU,
    "urg": signal.SIGURG,
}

#: The names, as an error message lists them.
SIGNAL_NAMES = ", ".join(name.upper() for name in SIGNALS if name != "check") + " or check"


def signal_key(text: str, table: Mapping[str, int] = SIGNALS) -> str | None:
    """The ``table`` key for a name as typed (``TERM``, ``SIGTERM``, ``term``), or None.

    ``table`` is :data:`SIGNALS` unless told otherwise.
    """
    name = text.strip().lower()
    if name.startswith("sig") and name[3:] in table and name != "sigcheck":
        name = name[3:]
    return name if name in table else None
