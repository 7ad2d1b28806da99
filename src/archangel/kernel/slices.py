"""Work on a loop in many small steps, yielding so the loop never stalls.

:class:`TimeSlice` is the one rule for it: the console's actions (killing
100,000 processes) and the sliced state dump both take steps and call
:meth:`TimeSlice.tick` after each.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["TimeSlice"]


class TimeSlice:
    """A share of the loop's time, for work done there in many small steps.

    Call :meth:`tick` after each step (on the loop doing the work): once
    ``seconds`` have passed since the slice began, it yields to the loop
    once and begins a new slice. So killing 100,000 processes never holds
    the loop for more than about ``seconds`` plus one step at a time.
    """

    __slots__ = ("_end", "seconds")

    def __init__(self, seconds: float = 0.001) -> None:
        self.seconds = seconds
        self._end = time.perf_counter() + seconds

    async def tick(self) -> None:
        """Yield to the loop if this slice is used up."""
        if time.perf_counter() >= self._end:
            await asyncio.sleep(0)
            self._end = time.perf_counter() + self.seconds
