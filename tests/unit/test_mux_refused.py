"""A gate on a shared connection whose subscription the broker refuses must hear it, and never say
Ready (Mosquitto 2 grants what an ACL hides; a broker may still answer SUBACK 0x80). The refusal
is the session's; the session is replaced by one that refuses (the mailbox logic only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gates.errors import Refused
from gates.mux import SharedConnection
from gates.transport import BrokerAddress, check_granted


@contextlib.asynccontextmanager
async def subscribing(shared: SharedConnection) -> AsyncIterator[None]:
    """The connection's own task that sends what gates ask for, as `serve()` runs it."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(shared._subscriptions())
        try:
            yield
        finally:
            task.cancel()


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
        async with subscribing(shared):

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


class SlowSession:
    """Acknowledges every SUBSCRIBE once `go` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def subscribe(self, filters: list[str]) -> None:
        await self.go.wait()

    async def unsubscribe(self, filters: list[str]) -> None:
        await asyncio.sleep(0)


def test_a_letter_on_a_topic_acknowledged_before_does_not_end_the_wait_for_the_others() -> None:
    """A gate says Ready once attached: it must be subscribed to all its topics by then, or what
    the broker routes to one of them before the SUBACK is lost."""

    async def attach_while_a_letter_comes() -> list[str]:
        shared = SharedConnection(BrokerAddress.parse("mqtt://127.0.0.1:1"))
        session = SlowSession()
        shared._session = session  # type: ignore[assignment]  # as a connected session leaves it
        shared.connected.set()
        async with subscribing(shared):
            said: list[str] = []
            session.go.set()
            async with shared.link(["gatemesh/d/control"]):  # a first gate: control is acknowledged
                session.go.clear()

                async def gate(topics: list[str], name: str) -> None:
                    async with shared.link(topics):
                        said.append(f"{name} ready")

                async with asyncio.TaskGroup() as group:
                    group.create_task(gate(["gatemesh/d/fwd/c"], "c"))  # its SUBSCRIBE goes, unacknowledged
                    await asyncio.sleep(0.02)
                    group.create_task(gate(["gatemesh/d/control", "gatemesh/d/fwd/b"], "b"))
                    await asyncio.sleep(0.05)  # b waits for fwd/b's SUBACK
                    shared._route("gatemesh/d/control", b"{}")  # a probe for another gate, meanwhile
                    await asyncio.sleep(0.05)
                    said.append("acknowledged")
                    session.go.set()
            return said

    said = asyncio.run(attach_while_a_letter_comes())
    assert said[0] == "acknowledged", said  # b was not ready before its fwd/b subscription was
    assert sorted(said[1:]) == ["b ready", "c ready"]


class PickySession:
    """Grants every filter but those in `refused`, as a SUBACK with 0x80 for those alone."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused

    async def subscribe(self, filters: list[str]) -> None:
        await asyncio.sleep(0)
        check_granted(filters, [0x80 if name in self.refused else 1 for name in filters])

    async def unsubscribe(self, filters: list[str]) -> None:
        await asyncio.sleep(0)

    def publish(self, *args: object) -> None:
        pass


def test_one_refused_filter_fails_only_the_gates_that_read_it() -> None:
    async def attach_two() -> tuple[BaseException | None, BaseException | None]:
        shared = SharedConnection(BrokerAddress.parse("mqtt://127.0.0.1:1"))
        shared._session = PickySession({"gatemesh/d/fwd/secret"})  # type: ignore[assignment]
        shared.connected.set()
        async with subscribing(shared):

            async def attach(topics: list[str]) -> BaseException | None:
                try:
                    async with shared.link(topics):
                        return None
                except Refused as exc:
                    return exc

            async with asyncio.TaskGroup() as group:  # both gates' topics go in one SUBSCRIBE
                reads_it = group.create_task(attach(["gatemesh/d/fwd/x", "gatemesh/d/fwd/secret"]))
                does_not = group.create_task(attach(["gatemesh/d/fwd/x", "gatemesh/d/fwd/y"]))
            return reads_it.result(), does_not.result()

    reads_it, does_not = asyncio.run(attach_two())
    assert isinstance(reads_it, Refused)
    assert str(reads_it) == "the broker refused the subscription(s) gatemesh/d/fwd/secret"
    assert does_not is None


def test_a_topic_refused_on_a_new_connection_stops_its_gates_not_the_connection() -> None:
    """After a reconnection every topic is subscribed again; one the broker now refuses (its ACL
    changed) must reach the gates that read it, while the rest carry on: not fail the new
    connection, and the next, for ever."""

    async def reconnect() -> tuple[list[str], BaseException | None, list[tuple[str, bytes]]]:
        shared = SharedConnection(BrokerAddress.parse("mqtt://127.0.0.1:1"))
        shared._session = PickySession(set())  # type: ignore[assignment]
        shared.connected.set()
        async with subscribing(shared):
            heard: list[tuple[str, bytes]] = []
            async with (
                shared.link(["gatemesh/d/fwd/x", "gatemesh/d/fwd/secret"]) as deaf,
                shared.link(["gatemesh/d/fwd/x"]) as fine,
            ):
                shared._disconnected()
                await shared._up(PickySession({"gatemesh/d/fwd/secret"}))  # type: ignore[arg-type]
                shared._route("gatemesh/d/fwd/x", b"1")
                failed: BaseException | None = None
                try:
                    async with asyncio.timeout(1):
                        async for letter in deaf.incoming():
                            heard.append(letter)
                except Refused as exc:
                    failed = exc
                async for letter in fine.incoming():
                    heard.append(letter)
                    break
                return sorted(shared._routes), failed, heard

    routes, failed, heard = asyncio.run(reconnect())
    assert routes == ["gatemesh/d/fwd/x"]
    assert isinstance(failed, Refused)
    assert "gatemesh/d/fwd/secret" in str(failed)
    assert heard == [("gatemesh/d/fwd/x", b"1")] * 2  # the letter before the refusal, and the other gate's
