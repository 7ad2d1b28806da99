"""Metrics, health probes and a live dashboard over HTTP, on their own thread (the ``web`` extra).

:class:`WebServer` serves ``/metrics`` (Prometheus), ``/livez``, ``/readyz``
and the dashboard at ``/`` from its own thread and loop, beside the
console, so it keeps answering while the app's loop is blocked, and logs
(and shows) where it is blocked.
It needs aiohttp and prometheus_client: ``pip install 'archangel-asyncio[web]'``.
The package is split by concept:

* :mod:`~archangel.web.server`: the :class:`WebServer` lifecycle, thread and routes;
* :mod:`~archangel.web.metrics`: the Prometheus collector and the per-server registry;
* :mod:`~archangel.web.probes`: what ``/livez`` and ``/readyz`` answer;
* :mod:`~archangel.web.watch`: the lag probe's driver and the blocked-loop warning;
* :mod:`~archangel.web.dashboard`: the page, its JSON API, event stream and actions;
* :mod:`~archangel.web.auth`: who may act: the token, sessions, CSRF and origin checks;
* :mod:`~archangel.web.target`: the App as the web layer sees it (a Protocol).

Like the console, it imports the kernel, :mod:`archangel.errors` and the
console's loop bridge only, never the app or the bus (``tests/test_layers.py``).
"""

from .server import WebServer as WebServer

__all__ = ["WebServer"]
