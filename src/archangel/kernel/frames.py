"""Where code is: a thread's stack and a task's chain of awaits, read from another thread.

The console reads these from its own thread while the app's loop runs (or
is blocked). Reading frame objects and a coroutine's ``cr_await`` chain is
safe under the GIL: the worst a race can do is show a chain that moved on a
moment later. Nothing here resumes, cancels or otherwise changes a task.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

__all__ = ["await_chain", "thread_frames"]

#: Deepest await chain followed (a guard against cycles and odd awaitables).
MAX_DEPTH = 200


def thread_frames(thread_id: int) -> list[FrameType]:
    """The frames of a thread's current stack, outermost first ([] if it is gone)."""
    frame = sys._current_frames().get(thread_id)
    frames: list[FrameType] = []
    while frame is not None and len(frames) < 10 * MAX_DEPTH:
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
    while current is not None and id(current) not in seen and len(seen) < MAX_DEPTH:
        seen.add(id(current))
        frame = _frame_of(current)
        if frame is None:
            return frames, current
        frames.append(frame)
        current = _awaited_by(current)
    return frames, None
