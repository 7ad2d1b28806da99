"""Where code is: stacks and await chains, and the frames an error keeps alive.

One module for frame walking: the console's ``stack`` and ``where``, the
``where=`` of a task in ``ps`` and the state dump, and the manager's
clearing of a failed process's traceback all use it. (The bus names where
a late subscriber waits with its own few lines: the bus imports nothing of
the kernel.)

The console reads these from its own thread while the app's loop runs (or
is blocked). Reading frame objects and a coroutine's ``cr_await`` chain is
safe under the GIL: the worst a race can do is show a chain that moved on a
moment later. Nothing here resumes, cancels or otherwise changes a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from types import FrameType
from typing import Any

__all__ = ["await_chain", "clear_frames", "innermost", "thread_frames"]

#: Deepest await chain followed (a guard against cycles and odd awaitables).
_MAX_DEPTH = 200


def thread_frames(thread_id: int) -> list[FrameType]:
    """The frames of a thread's current stack, outermost first ([] if it is gone)."""
    frame = sys._current_frames().get(thread_id)
    frames: list[FrameType] = []
    while frame is not None and len(frames) < 10 * _MAX_DEPTH:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _frame_of(awaitable: Any) -> FrameType | None:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(awaitable, attr, None)
        if isinstance(frame, FrameType):
            return frame
    return None


def _awaited_by(awaitable: Any) -> Any:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, attr, None)
        if inner is not None:
            return inner
    return None


def await_chain(coro: Any) -> tuple[list[FrameType], Any]:
    """Follow a coroutine's ``cr_await`` chain.

    Returns:
        The frames of the coroutines and generators in the chain, outermost
        first, and the innermost object awaited that is not one of them
        (a future, say), or None.
    """
    frames: list[FrameType] = []
    seen: set[int] = set()
    current = coro
    while current is not None and id(current) not in seen and len(seen) < _MAX_DEPTH:
        seen.add(id(current))
        frame = _frame_of(current)
        if frame is None:
            return frames, current
        frames.append(frame)
        current = _awaited_by(current)
    return frames, None


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep


def innermost(coro: Any) -> str | None:
    """``file:line`` where a coroutine chain waits: its innermost frame outside asyncio.

    Frames inside asyncio itself (``sleep``, ``wait_for``...) tell an operator
    nothing, so the deepest frame of the caller's code is reported instead;
    None if the coroutine has no frame (it finished).
    """
    where = None
    for frame in await_chain(coro)[0]:
        filename = frame.f_code.co_filename
        if where is None or not filename.startswith(_ASYNCIO_DIR):
            where = f"{filename}:{frame.f_lineno}"
    return where


def clear_frames(error: BaseException) -> None:
    """Drop the local variables of the finished frames in ``error``'s tracebacks.

    The history keeps a failed process's error, and the frames of its
    traceback would keep their variables alive: ``self`` (the protocol, the
    task process) and whatever they hold. File names and line numbers stay,
    so the traceback still formats. The causes, contexts and members of an
    exception group are cleared too.

    Only frames that have finished are cleared: CPython tracks a frame object
    in the garbage collector once the frame has ended and the object owns its
    variables. A frame still running, or a suspended coroutine's (one that
    caught the same exception, raised again from a shared future), is left
    alone: before Python 3.13, clearing a suspended frame closes its coroutine.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if gc.is_tracked(tb.tb_frame):
                with contextlib.suppress(RuntimeError):  # running after all
                    tb.tb_frame.clear()
            tb = tb.tb_next
        pending.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
