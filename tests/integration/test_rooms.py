"""Rooms of `gatemesh serve` (web/rooms.py) on Mosquitto: each its own runs and gates, closed when left."""

from __future__ import annotations

import asyncio

import pytest

from broker.launch import free_port
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.reference import evaluate
from tests.integration.test_big_deployment import until
from tests.integration.test_junk import answering
from web.commands import Run
from web.rooms import BadRoomName, Rooms
from web.session import Session


async def test_rooms_run_apart_and_a_room_nobody_is_in_closes_with_its_gates(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    rooms = Rooms(Session(broker), lambda name: Session(broker, room=name), most=2, idle=0.5)
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(rooms.serve())
        try:
            async with asyncio.timeout(30):
                await rooms.shared.ready.wait()
            assert await rooms.enter(None) is rooms.shared
            ada = await rooms.enter("ada")
            assert await rooms.enter("ada") is ada  # a second page naming it joins it
            bob = await rooms.enter("bob")
            assert len({id(rooms.shared), id(ada), id(bob)}) == 3
            assert (ada.choices()["room"], rooms.shared.choices()["room"]) == ("ada", "")

            pages = {}
            for session, source, inputs in (
                (ada, "(x+y)*z", {"x": -2.0, "y": 5.0, "z": -4.0}),
                (bob, "x*y", {"x": 2.0, "y": 3.0}),
            ):
                pages[session.room] = session.connect()  # a page is in the room
                session.start(Run(type="run", source=source, inputs=inputs))
            await until(lambda: ada.view.status == "done" and bob.view.status == "done", 30)
            assert ada.view.result == evaluate(compile_source("(x+y)*z"), {"x": -2, "y": 5, "z": -4})
            assert bob.view.result == evaluate(compile_source("x*y"), {"x": 2, "y": 3})
            assert rooms.shared.view.status == "idle"  # neither run is the shared room's
            assert ada.targets.current is not None
            deployment = ada.targets.current.runner.deployment
            assert await answering(broker, deployment) == {"x", "y", "z", "add_1", "f"}

            with pytest.raises(ValueError, match="this server has 2 rooms open, each with a page in it"):
                await rooms.enter("cy")
            with pytest.raises(BadRoomName, match="room 'no room': a room's name is letters, digits"):
                await rooms.enter("no room")

            ada.clients.clear()  # its last page left
            await until(lambda: "ada" not in rooms.rooms, 10)
            assert "bob" in rooms.rooms  # a page is still in it
            await until(lambda: ada.targets.current is None, 10)
            assert await answering(broker, deployment) == set()  # its gates are gone
            cy = await rooms.enter("cy")  # room for another now
            assert cy is not ada
            assert cy is not bob

            dee = await rooms.enter("dee")  # full again, but cy has no page: it makes room
            assert sorted(rooms.rooms) == ["bob", "dee"]
            assert dee is not cy

            rooms.rooms["bob"].task.cancel()  # type: ignore[union-attr]  # as when the server stops
            await until(lambda: pages["bob"].gone != "", 10)
            assert pages["bob"].gone == "room bob closed: the server is stopping"
            assert pages["bob"].replies[-1] == {"type": "problem", "message": pages["bob"].gone}
        finally:
            serving.cancel()


async def test_a_room_that_cannot_open_says_why(mosquitto_url: str) -> None:
    """Its broker is not there: the page is told the cause, not "unhandled errors in a TaskGroup"."""
    nowhere = BrokerAddress(host="127.0.0.1", port=free_port())
    rooms = Rooms(Session(BrokerAddress.parse(mosquitto_url)), lambda name: Session(nowhere, room=name))
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(rooms.serve())
        try:
            async with asyncio.timeout(30):
                await rooms.shared.ready.wait()
            with pytest.raises(ValueError, match=r"^room ada could not open: ") as caught:
                await rooms.enter("ada")
            assert f"cannot reach the broker at {nowhere}" in str(caught.value)
            assert "TaskGroup" not in str(caught.value)
            assert "ada" not in rooms.rooms
        finally:
            serving.cancel()
