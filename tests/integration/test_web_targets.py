"""Where the page's gates run: a target is opened for a run and handed over, or closed."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from tests.processes import GateHostProcess
from web.targets import Place, Targets


async def test_a_target_whose_opener_stopped_waiting_is_closed_not_handed_over(
    mosquitto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A second Run cancels the first while its gates come up; when both happen in one turn of the
    loop, the target finds its future cancelled. Setting its result raised InvalidStateError,
    logged as a failed deployment: now the target closes its gates and returns."""
    async with asyncio.TaskGroup() as group:
        targets = Targets(BrokerAddress.parse(mosquitto_url), spawn=group.create_task)
        ready: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        ready.cancel()
        place = Place("here", compile_source("x * 2"))
        async with asyncio.timeout(20):
            await targets._hold(place, ready)  # type: ignore[arg-type]
        assert targets.current is None
    assert caplog.text == ""


async def test_a_close_cancelled_while_it_waits_lets_the_target_finish_undeploying(mosquitto_url: str) -> None:
    """Run, then Run again while the first target closes: the second request's cancellation ends
    its wait, never the undeploy it waits for (that left the gates and the deployment behind)."""
    async with asyncio.TaskGroup() as group:
        targets = Targets(BrokerAddress.parse(mosquitto_url), spawn=group.create_task)
        target = await targets.get(Place("here", compile_source("x * 2")))
        assert target.task is not None
        closing = group.create_task(targets.close())
        await asyncio.sleep(0)  # closing waits for the target's task now
        closing.cancel()
        async with asyncio.timeout(20):
            await asyncio.wait([target.task])
        assert not target.task.cancelled()
        assert closing.cancelled()


async def test_a_run_with_the_pages_faults_gets_gates_of_its_own(mosquitto_url: str) -> None:
    """A seeded injector's choices go on from run to run: on reused gates, running again with the
    same seed showed other faults. Without faults the gates are reused."""
    circuit = compile_source("x * 2")
    async with asyncio.TaskGroup() as group:
        targets = Targets(BrokerAddress.parse(mosquitto_url), spawn=group.create_task)
        plain = await targets.get(Place("here", circuit))
        assert await targets.get(Place("here", circuit)) is plain
        faulty = await targets.get(Place("here", circuit, faults="dup=0.5,seed=3"))
        again = await targets.get(Place("here", circuit, faults="dup=0.5,seed=3"))
        assert again is not faulty
        assert again.runner.deployment != faulty.runner.deployment
        await targets.close()
    host = GateHostProcess(mosquitto_url, f"fresh-{secrets.token_hex(3)}")
    try:
        await asyncio.to_thread(host.wait_online)
        async with asyncio.TaskGroup() as group:  # on hosts, started with the page's faults: the same
            targets = Targets(BrokerAddress.parse(mosquitto_url), spawn=group.create_task)
            on_hosts = Place("hosts", circuit, hosts=(host.name,), faults="dup=0.5,seed=3")
            first = await targets.get(on_hosts)
            assert (await targets.get(on_hosts)).runner.deployment != first.runner.deployment
            await targets.close()
    finally:
        host.stop()
