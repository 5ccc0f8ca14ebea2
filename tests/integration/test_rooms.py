"""Rooms of `gatemesh serve` (web/rooms.py) on Mosquitto: each its own runs and gates, closed when left."""

from __future__ import annotations

import asyncio

import pytest

from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.reference import evaluate
from tests.integration.test_big_deployment import until
from tests.integration.test_junk import answering
from web.commands import Run
from web.rooms import Rooms
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
            assert ada.choices()["room"] == "ada"
            assert rooms.shared.choices()["room"] == ""

            for session, source, inputs in (
                (ada, "(x+y)*z", {"x": -2.0, "y": 5.0, "z": -4.0}),
                (bob, "x*y", {"x": 2.0, "y": 3.0}),
            ):
                session.clients.add(session.connect())  # a page is in the room
                session.start(Run(type="run", source=source, inputs=inputs))
            await until(lambda: ada.view.status == "done" and bob.view.status == "done", 30)
            assert ada.view.result == evaluate(compile_source("(x+y)*z"), {"x": -2, "y": 5, "z": -4})
            assert bob.view.result == evaluate(compile_source("x*y"), {"x": 2, "y": 3})
            assert rooms.shared.view.status == "idle"  # neither run is the shared room's
            assert ada.targets.current is not None
            deployment = ada.targets.current.runner.deployment
            assert await answering(broker, deployment) == {"x", "y", "z", "add_1", "f"}

            with pytest.raises(ValueError, match="this server has 2 rooms open, the most it keeps"):
                await rooms.enter("cy")
            with pytest.raises(ValueError, match="room 'no room': a room's name is letters, digits"):
                await rooms.enter("no room")

            ada.clients.clear()  # its last page left
            await until(lambda: "ada" not in rooms.rooms, 10)
            assert "bob" in rooms.rooms  # a page is still in it
            await until(lambda: ada.targets.current is None, 10)
            assert await answering(broker, deployment) == set()  # its gates are gone
            assert await rooms.enter("cy") is not ada  # room for another now
        finally:
            serving.cancel()
