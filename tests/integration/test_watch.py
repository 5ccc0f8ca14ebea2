"""orchestrator/watch.py on a real broker: a Watcher follows the runs another Runner makes, and its
WatchRecorder traces them as that Runner's own Recorder does, without sending a message."""

from __future__ import annotations

import asyncio

import pytest

from gates.protocol import ORCHESTRATOR, Feed, Probe, Release, topic
from gates.transport import BrokerAddress
from orchestrator.cluster import DeploymentRecord
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.errors import GateFailed, RunError
from orchestrator.recorder import Recorder
from orchestrator.result import RunResult
from orchestrator.runner import Runner, connected
from orchestrator.watch import ReadOnly, Watcher, WatchRecorder

pytestmark = pytest.mark.integration

QF = RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})


def record_of(runner: Runner) -> DeploymentRecord:
    """The record of an in-process deployment (it has none on the broker: no hosts to watch)."""
    placement = {g.id: "local" for g in runner.circuit.gates}
    return DeploymentRecord(
        name="watched", circuit_id=runner.deployment, circuit=runner.circuit, placement=placement, hosts={}
    )


def seen(recorder: Recorder, run: str) -> list[tuple[object, ...]]:
    """Every event of `run` but when it was recorded: who, what, its clocks, which message."""
    return [
        (e.node, e.type, e.lamport, sorted(e.vc.items()), e.msg.id if e.msg else None)
        for e in recorder.events
        if e.run == run
    ]


async def test_a_watcher_follows_runs_it_did_not_start_and_traces_them_as_their_orchestrator_did(
    mosquitto_url: str,
) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    theirs = Recorder()
    async with in_process(compile_source("(x+y)*z"), broker, recorder=theirs) as runner:
        ours = WatchRecorder()
        adopted: list[tuple[str, bool]] = []
        inputs: dict[str, dict[str, float]] = {}

        def on_run(run: str, traced: bool) -> None:
            adopted.append((run, traced))
            inputs[run] = watcher.inputs[run]  # filled in as the feeds arrive
            if traced:
                ours.begin(run, {})

        watcher = Watcher(record_of(runner), broker, on_run=on_run)
        watcher.recorder = ours
        ours.attach(runner.circuit, runner.deployment, watcher.placement)
        async with connected(watcher):
            assert await runner.run({"x": -2, "y": 5, "z": -4}) == QF
            run = await watcher.started.get()
            assert await watcher.follow(run) == QF
            await theirs.drain()
            await ours.drain()
            assert adopted == [(run, True)]
            assert inputs[run] == {"x": -2, "y": 5, "z": -4}
            events = seen(ours, run)
            assert [e for e in events if e[0] == ORCHESTRATOR and e[1] == "send"] == [  # off the wire, as sent
                e for e in seen(theirs, run) if e[0] == ORCHESTRATOR and e[1] == "send"
            ]
            assert sorted(events, key=str) == sorted(seen(theirs, run), key=str)  # every event, every clock

            runner.recorder = None  # a run with no clocks: followed, not traced
            assert await runner.run({"x": 3, "y": 1, "z": 2}) == RunResult(value=8.0, grads={"x": 2, "y": 2, "z": 4})
            untraced = await watcher.started.get()
            assert (await watcher.follow(untraced)).value == 8.0
            assert adopted[1:] == [(untraced, False)]
            assert inputs[untraced] == {"x": 3, "y": 1, "z": 2}
            assert not [e for e in ours.events if e.run == untraced]

            with pytest.raises(ReadOnly, match="a watcher publishes nothing"):
                await watcher.run({"x": 1, "y": 1, "z": 1})
            assert watcher.started.empty()  # and that run never started


async def test_a_watched_run_fails_as_its_orchestrator_sees_it_fail(mosquitto_url: str) -> None:
    """A gate's error fails the watched run naming the gate; a run its orchestrator gives up on
    (its Release) fails naming what the gates answered to that orchestrator's probe."""
    broker = BrokerAddress.parse(mosquitto_url)
    async with in_process(compile_source("log(x) * y"), broker) as runner:
        watcher = Watcher(record_of(runner), broker)
        async with connected(watcher):
            with pytest.raises(GateFailed) as failed:
                await runner.run({"x": -1, "y": 2})
            with pytest.raises(GateFailed, match=f"gate {failed.value.gate} failed: "):
                await watcher.follow(await watcher.started.get())

    async with in_process(compile_source("(x+y)*z"), broker) as runner:
        watcher = Watcher(record_of(runner), broker)
        async with connected(watcher):
            # an orchestrator that feeds x and y but never z, probes the gates, and gives up on the run
            c, run = runner.deployment, "0123456789abcdef"
            summed = asyncio.Event()  # add_1 has sent x + y on: the gates' answers to the probe are settled
            watcher.observer = lambda name, message: summed.set() if message.sender == "add_1" else None
            feed = Feed(circuit=c, sender=ORCHESTRATOR, run=run, value=1.0)
            await runner.publish([(topic(c, "feed", leaf), feed) for leaf in "xy"], confirm=True)
            assert await watcher.started.get() == run
            async with asyncio.timeout(10):
                await summed.wait()
            await runner.publish([(topic(c, "control"), Probe(circuit=c, sender=ORCHESTRATOR, run=run))])
            await asyncio.sleep(0.5)
            await runner.publish([(topic(c, "control"), Release(circuit=c, sender=ORCHESTRATOR, run=run))])
            given_up = f"run {run} was given up by the orchestrator that started it; not finished: "
            with pytest.raises(RunError, match=given_up) as gave:
                await watcher.follow(run)
            assert "input(z) has not heard of the run" in str(gave.value)
            assert "mul(f) waits for input(s) z" in str(gave.value)
