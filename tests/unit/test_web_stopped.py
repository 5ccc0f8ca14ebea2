"""The page's runs replace one another: a newer request cancels the ones before it and waits for them.
Three quick requests must leave only the newest running, and only once the others are over
(cancellation is never swallowed)."""

from __future__ import annotations

import asyncio

from web.session import _stopped


def test_a_request_cancelled_while_it_waits_for_the_one_before_does_not_run() -> None:
    ran: list[str] = []

    async def request(name: str, previous: set[asyncio.Task[None]]) -> None:
        await _stopped(previous)
        ran.append(name)
        try:
            await asyncio.sleep(1.0)  # the run
            ran.append(f"{name} finished")
        finally:
            await asyncio.sleep(0.2)  # its clean-up (a recorder's drain)

    async def three_clicks() -> asyncio.Task[None]:
        async with asyncio.TaskGroup() as group:
            first = group.create_task(request("first", set()))
            first.add_done_callback(lambda _: ran.append("first over"))
            await asyncio.sleep(0.05)
            second = group.create_task(request("second", {first}))
            await asyncio.sleep(0)  # second is waiting for first to stop
            group.create_task(request("third", {first, second}))  # the session gives it every run not over
        return second

    second = asyncio.run(three_clicks())
    assert second.cancelled()
    assert ran == ["first", "first over", "third", "third finished"]
