"""A clean-up that must run to its end in a task being cancelled (gates/lifecycle.py)."""

from __future__ import annotations

import asyncio

import pytest

from gates.lifecycle import despite_cancellation


async def test_a_clean_up_in_a_cancelled_task_runs_to_its_end_and_the_task_ends_cancelled() -> None:
    done: list[str] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.01)  # a plain await in a cancelled task would raise at once
        await asyncio.sleep(0.01)
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


async def test_a_timeout_around_the_task_still_turns_its_cancellation_into_timeout_error() -> None:
    """The cancellations set aside are requested again: asyncio.timeout must still see its own."""
    cleaned: list[bool] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.01)
        cleaned.append(True)

    async def waits() -> None:
        async with asyncio.timeout(0.02):
            try:
                await asyncio.sleep(10)
            finally:
                await despite_cancellation(clean_up, 5)

    with pytest.raises(TimeoutError):
        await waits()
    assert cleaned == [True]
