"""Stopping tasks reliably.

On Python 3.11, `asyncio.wait_for` (which aiomqtt uses for every publish and subscribe)
can swallow a cancellation that arrives just as the awaited operation completes
(CPython gh-86296, fixed in 3.12). A gate cancelled at that instant would keep serving and
its task group would wait forever. `cancel_and_wait` cancels again until the task is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_AFTER = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks and return once every one of them has finished."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (possibly nested) exception group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that made a task group fail (its first leaf that is not a cancellation)."""
    return next((e for e in leaves(group) if not isinstance(e, asyncio.CancelledError)), group)


RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Back-off between reconnection attempts (the last one repeats)."""


class Backoff:
    """Delays between reconnection attempts, growing to a cap; `reset` after a success."""

    def __init__(self) -> None:
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = RECONNECT_DELAYS[min(self.attempt, len(RECONNECT_DELAYS) - 1)]
        self.attempt += 1
        return delay
