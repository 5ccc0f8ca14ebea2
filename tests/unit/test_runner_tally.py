"""A tallied run counts its own messages only: the gates of a run cancelled before it may still
be sending, and the page's progress must not count those into the new run's."""

from __future__ import annotations

import asyncio

from gates.protocol import Forward, topic
from gates.transport import BrokerAddress, encode
from orchestrator.compiler import compile_source
from orchestrator.runner import Runner, _Pending


def test_the_last_runs_late_messages_are_not_counted_into_the_run_in_flight() -> None:
    async def hear_both() -> list[tuple[str, str]]:
        counted: list[tuple[str, str]] = []
        runner = Runner(compile_source("(x+y)*z"), "d1", BrokerAddress.parse("mqtt://127.0.0.1:1"))
        runner.tally = lambda run, kind: counted.append((run, kind))
        runner._last_run = "run-old"  # cancelled by a restart: its gates still send
        loop = asyncio.get_running_loop()
        runner._pending["run-new"] = _Pending(loop.create_future(), loop.create_future(), set())
        for run in ("run-old", "run-new", "run-old"):
            message = Forward(circuit="d1", sender="add_1", run=run, value=3.0)
            runner.on_message(topic("d1", "fwd", "add_1"), encode(message))
        return counted

    assert asyncio.run(hear_both()) == [("run-new", "fwd")]


def test_after_its_run_the_last_runs_late_messages_are_counted_as_its_own() -> None:
    counted: list[tuple[str, str]] = []
    runner = Runner(compile_source("(x+y)*z"), "d1", BrokerAddress.parse("mqtt://127.0.0.1:1"))
    runner.tally = lambda run, kind: counted.append((run, kind))
    runner._last_run = "run-old"  # over: its gradients' reports may still be on their way
    message = Forward(circuit="d1", sender="add_1", run="run-old", value=3.0)
    runner.on_message(topic("d1", "fwd", "add_1"), encode(message))
    assert counted == [("run-old", "fwd")]
