"""Follow two logs, give each line an id, pair logins with logouts, time out the rest.

Run::

    python examples/sessions_pipeline.py                 # made-up logs, until Ctrl-C
    python examples/sessions_pipeline.py --seconds 5     # stop by itself after 5 s
    python examples/sessions_pipeline.py auth.log app.log --timeout 30

What it shows, deadbeat's way on archangel:

* ``tail([auth, app], with_path=True)`` follows both files, each through its
  own rotations (the made-up ``auth.log`` is rotated once); every item says
  which file it came from;
* ``id_setter`` turns each line into an event with a unique id, which every
  log line about it names;
* ``Sessions`` holds a login until its logout comes, merges the two into one
  session event under a new id and broadcasts ``event_renamed``; a login
  without a logout is let go by its **timer** (``release_every``) after
  ``--timeout`` seconds, not only when the next line comes or at the end;
* ``Raw`` keeps each event's raw text (a per-event resource), merges it on
  ``event_renamed`` and frees it on ``event_finished``, which the last cog
  broadcasts for every event it is done with. At the end nothing is left.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import random
import signal
import tempfile
from typing import Any

from archangel import ProcessManager
from archangel.pipes.cogs import Cog
from archangel.pipes.pipeline import Pipeline
from archangel.pipes.supplies import FileLine, tail

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def to_event(line: FileLine, event_id: object) -> dict[str, Any]:
    """The ``id_setter``: each line becomes an event with the next id."""
    verb, _, rest = line.line.partition(" ")
    return {"id": event_id, "file": os.path.basename(line.path), "verb": verb, "rest": rest}


class Raw(Cog):
    """Keeps each event's raw text until the event is finished (a per-event resource)."""

    def __init__(self) -> None:
        self.held: dict[Any, list[str]] = {}
        self.renamed = self.freed = 0

    def __call__(self, event: dict[str, Any]) -> tuple[dict[str, Any]]:
        self.held[event["id"]] = [f"{event['verb']} {event['rest']}"]
        return (event,)

    def event_renamed(self, old: Any, new: Any) -> None:
        self.renamed += 1
        self.held.setdefault(new, []).extend(self.held.pop(old, []))

    def event_finished(self, event_id: Any) -> None:
        self.freed += 1
        del self.held[event_id]


class Sessions(Cog):
    """Pairs ``login USER`` with ``logout USER``; lets a lone login go after ``timeout`` s."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.release_every = timeout / 2  # the timer that lets lone logins go
        self.open: dict[str, tuple[float, dict[str, Any]]] = {}

    def __call__(self, event: dict[str, Any]) -> tuple[dict[str, Any]] | None:
        user = event["rest"]
        if event["verb"] == "login":
            earlier = self.open.pop(user, None)
            self.open[user] = (asyncio.get_running_loop().time(), event)
            if earlier is not None:  # logged in again: the earlier login will see no logout
                return ({**earlier[1], "kind": "replaced"},)
            return None  # held until the logout, or the timer
        if event["verb"] == "logout" and user in self.open:
            _, login = self.open.pop(user)
            session = {"id": f"s{login['id']}", "kind": "session", "user": user}
            for part in (login, event):
                self.notify("event_renamed", part["id"], session["id"])
            return (session,)
        return ({**event, "kind": "other"},)

    def release(self, now: float) -> list[dict[str, Any]]:
        late = [user for user, (when, _) in self.open.items() if now - when >= self.timeout]
        return [{**self.open.pop(user)[1], "kind": "timed out"} for user in late]

    def finish(self) -> list[dict[str, Any]]:
        held, self.open = self.open, {}
        return [{**event, "kind": "unfinished"} for _, event in held.values()]


class Finished(Cog):
    """The last cog: counts each event by kind and broadcasts that it is finished."""

    def __init__(self) -> None:
        self.kinds: collections.Counter[str] = collections.Counter()

    def __call__(self, event: dict[str, Any]) -> tuple[dict[str, Any]]:
        self.kinds[event["kind"]] += 1
        self.notify("event_finished", event["id"])
        return (event,)


def append(path: str, line: str | None) -> None:
    """Append one line (None: just create the file)."""
    with open(path, "a") as log:
        if line is not None:
            log.write(line + "\n")


async def write_made_up_logs(auth: str, app: str) -> None:
    """Logins and logouts in ``auth``, other lines in ``app``; ``auth`` rotates after 1 s.

    One logout in five never comes, and that user stays away for 2 s: long
    enough for the login to time out.
    """
    loop = asyncio.get_running_loop()
    rotate_at, logged_in, away = loop.time() + 1.0, set(), {}
    while True:
        now = loop.time()
        user = random.choice([u for u in USERS if away.get(u, 0) <= now])
        if user in logged_in:
            logged_in.discard(user)
            if random.random() < 0.8:
                append(auth, f"logout {user}")
            else:
                away[user] = now + 2.0
        else:
            logged_in.add(user)
            append(auth, f"login {user}")
        append(app, f"request {random.randint(1, 999)}")
        if rotate_at and loop.time() >= rotate_at:
            os.replace(auth, auth + ".1")  # the tail of auth.log follows; app.log's is untouched
            rotate_at = 0
        await asyncio.sleep(0.05)


async def main(paths: list[str], seconds: float | None, timeout: float) -> None:
    manager = ProcessManager()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with tempfile.TemporaryDirectory() as tmp:
        if not paths:
            paths = [os.path.join(tmp, "auth.log"), os.path.join(tmp, "app.log")]
            for path in paths:
                append(path, None)
            manager.spawn(write_made_up_logs(*paths), name="made-up-logs")
        print(f"following {', '.join(paths)}")
        supply = tail(paths, with_path=True)
        raw, sessions, finished = Raw(), Sessions(timeout), Finished()
        pipeline = Pipeline(supply, raw, sessions, finished, id_setter=to_event, name="sessions")
        manager.spawn(pipeline)
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
        print("stopping...")
        await manager.shutdown(timeout=5)
        kinds = finished.kinds
        print(
            f"sessions: {kinds['session']} closed, {kinds['timed out']} timed out, "
            f"{kinds['replaced']} replaced, {kinds['unfinished']} unfinished; "
            f"{kinds['other']} other lines"
        )
        print(f"notifications: {raw.renamed} renamed, {raw.freed} finished")
        print(f"raw texts still held: {len(raw.held)}")
        by_timer = pipeline.cog_counters[1]["flushed"] - kinds["unfinished"]
        print(f"released by the timer: {by_timer}")
        print(f"tail: rotations per file {[one.rotations for one in supply.tails]}")
        print(f"pipeline counters: {dict(pipeline.counters)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="the logs to follow (default: made up)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds a login waits")
    parser.add_argument("--seed", type=int, help="seed the made-up logs (the same lines each run)")
    options = parser.parse_args()
    random.seed(options.seed)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(options.paths, options.seconds, options.timeout))
