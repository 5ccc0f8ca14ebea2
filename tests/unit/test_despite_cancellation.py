"""A clean-up that must run to its end in a task being cancelled (gates/lifecycle.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gates.lifecycle import despite_cancellation
from gates.transport import _go_on_cancelling


async def test_a_clean_up_through_the_transport_runs_to_its_end_and_the_task_ends_cancelled() -> None:
    """The transport ends a call with CancelledError in a task that is cancelling (as aiomqtt
    can swallow a cancellation): an undeploy in the `finally` of a cancelled run was cut at its
    first read, and the one-run deployment stayed on the hosts."""
    done: list[str] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.01)
        _go_on_cancelling(None)  # what every transport call ends with
        done.append("undeployed")

    async def run() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await despite_cancellation(clean_up, 5)

    async with asyncio.TaskGroup() as group:
        task = group.create_task(run())
        await asyncio.sleep(0)
        task.cancel()
    assert done == ["undeployed"]
    assert task.cancelled()


async def test_a_clean_up_that_hangs_is_cut_at_its_time_and_the_cancellation_goes_on() -> None:
    async def hangs() -> None:
        await asyncio.sleep(10)

    async def run() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            with pytest.raises(TimeoutError):
                await despite_cancellation(hangs, 0.05)

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        task = group.create_task(run())
        await asyncio.sleep(0)
        task.cancel()
    assert task.cancelled()


async def test_the_callers_cancellation_is_left_as_it_was() -> None:
    """The task's cancel requests are not touched: a timeout around it still turns its own
    cancellation into TimeoutError, and the task then goes on with no cancellation pending."""
    cleaned: list[bool] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.01)
        cleaned.append(True)

    async def waits() -> None:
        async with asyncio.timeout(0.02):
            try:
                await asyncio.sleep(10)
            finally:
                assert asyncio.current_task().cancelling() == 1  # type: ignore[union-attr]
                await despite_cancellation(clean_up, 5)
                assert asyncio.current_task().cancelling() == 1  # type: ignore[union-attr]

    with pytest.raises(TimeoutError):
        await waits()
    assert cleaned == [True]
    await asyncio.sleep(0.01)  # nothing pending cancels this task afterwards


async def test_what_a_clean_up_raises_comes_out_bare_so_a_finally_can_suppress_it() -> None:
    """In an exception group, a failed undeploy of a deployment never made got past
    `contextlib.suppress(DeployError, ...)` and replaced the run's own error."""

    async def fails() -> None:
        raise LookupError("no deployment named 'run-x'")

    with pytest.raises(LookupError, match="no deployment named"):
        await despite_cancellation(fails, 5)
    with contextlib.suppress(LookupError):
        await despite_cancellation(fails, 5)
