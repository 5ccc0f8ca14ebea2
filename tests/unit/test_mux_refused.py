"""A gate on a shared connection whose subscription the broker refuses must hear it, and never say
Ready (Mosquitto 2 grants what an ACL hides; a broker may still answer SUBACK 0x80). The refusal
is the session's; the session is replaced by one that refuses (the mailbox logic only)."""

from __future__ import annotations

import asyncio

import pytest

from gates.errors import Refused
from gates.mux import SharedConnection
from gates.transport import BrokerAddress


class RefusingSession:
    """Answers every SUBSCRIBE with a refusal, as Session.subscribe does for a SUBACK of 0x80."""

    async def subscribe(self, filters: list[str]) -> None:
        await asyncio.sleep(0)
        raise Refused(f"the broker refused {filters}")

    async def unsubscribe(self, filters: list[str]) -> None:
        await asyncio.sleep(0)


@pytest.mark.parametrize("gates", [1, 3])
def test_every_gate_waiting_on_a_refused_topic_hears_the_refusal(gates: int) -> None:
    async def attach_all() -> list[BaseException | None]:
        shared = SharedConnection(BrokerAddress.parse("mqtt://127.0.0.1:1"))
        shared._session = RefusingSession()  # type: ignore[assignment]  # as a connected session leaves it
        shared.connected.set()

        async def attach() -> BaseException | None:
            try:
                async with shared.link(["gatemesh/d/fwd/x"]):
                    return None
            except Refused as exc:
                return exc

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(attach()) for _ in range(gates)]
        return [task.result() for task in tasks]

    found = asyncio.run(attach_all())
    assert all(isinstance(exc, Refused) for exc in found), found
