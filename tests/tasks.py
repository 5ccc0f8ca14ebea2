"""Tasks a test starts, then awaits or cancels: each in an asyncio.TaskGroup, as in the code under test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def caught(work: Awaitable[T]) -> T | Exception:
    """`work`'s result, or the error it raised: a task that raises ends its TaskGroup, and the
    test with it, before the test can look at what it raised."""
    try:
        return await work
    except Exception as exc:
        return exc


async def cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended, cancelled. The task's cancellation is not the
    test's: a test cancelled meanwhile is cancelled still (no `suppress(CancelledError)`)."""
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled(), task
