"""A run whose connection breaks while its timed-out gates are probed fails as a lost connection
(retried like one), never as a transport-level error the CLI cannot name. The broker is replaced
by a session that accepts every publish and answers nothing (the runner's logic only)."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from gates.protocol import Status
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.errors import GatesNotReady, RunConnectionLost
from orchestrator.runner import Runner, _loses
from orchestrator.standing import standing


class SilentSession:
    """Takes every publish at once and never hears back: every run times out."""

    timeout = 1.0

    async def publish_all(self, batch: object, retain: bool = False, *, confirm: bool = True) -> None:
        return None


def test_a_connection_lost_during_the_probe_is_a_lost_connection() -> None:
    async def run_and_lose_the_broker() -> None:
        runner = Runner(compile_source("x+y"), "d1", BrokerAddress.parse("mqtt://127.0.0.1:1"))
        runner._session = SilentSession()  # type: ignore[assignment]
        runner.connected.set()
        runner.probe_window = 0.3

        async def lose_the_broker() -> None:
            await asyncio.sleep(0.15)  # the run's 0.1 s timeout has struck: its gates are being probed
            runner._down(None, None)

        async with asyncio.TaskGroup() as group:
            group.create_task(lose_the_broker())
            await runner.run({"x": 1, "y": 2}, timeout=0.1, retries=1)

    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(run_and_lose_the_broker())
    (lost,) = caught.value.exceptions
    assert isinstance(lost, RunConnectionLost), repr(lost)


def test_many_gates_that_did_not_answer_are_one_line_and_where_the_pass_stopped_still_shows() -> None:
    """Under drop faults a 1,200-gate run's timeout listed eight lost probe answers and nothing of
    where the pass stopped. Past three they are counted in one line."""
    circuit = compile_source("x0 + x1 + x2 + x3 + x4")  # add_1, add_2, add_3, f: chained
    status = partial(Status, circuit="d1", run="r1")
    waits = status(sender="add_2", state="waiting_inputs", missing_inputs=("x2",))
    answers = {"add_2": waits, "add_1": status(sender="add_1", state="waiting_grads", grads_expected=1)}
    stuck, shown = standing(circuit, answers, set(circuit.leaves))
    assert stuck == [g.id for g in circuit.order]  # every gate, in the circuit's order
    assert shown == (
        "7 gates did not answer the probe (input(x0), input(x1), input(x2) and 4 more: answers travel like any "
        "message, so a fault injector drops and delays them too, and a lost host takes its gates); "
        "add(add_2) waits for input(s) x2; "
        "add(add_1) has 0 of 1 gradient(s)"
    )
    four = {g.id: waits for g in circuit.gates if g.id not in ("x0", "x1", "x2", "f")}
    assert standing(circuit, four, set(circuit.leaves))[1].startswith(  # a fourth is named: not "and 1 more"
        "4 gates did not answer the probe (input(x0), input(x1), input(x2) and add(f): "
    )
    few = {g.id: waits for g in circuit.gates if g.id not in ("x0", "f")}
    assert standing(circuit, few, set(circuit.leaves))[1].startswith(
        "input(x0) did not answer; add(f) did not answer; "
    )


def test_a_value_lost_on_its_way_to_the_orchestrator_is_named_first() -> None:
    """f's value was dropped on its way to the orchestrator: every gate then waits for a
    gradient, and the timeout named them all ("has 0 of 1 gradient(s)") but not what was lost."""
    circuit = compile_source("q = x + y; f = q * z")
    waiting = {g.id: Status(circuit="d1", sender=g.id, run="r1", state="waiting_grads") for g in circuit.gates}
    _, shown = standing(circuit, waiting, set(circuit.leaves), value_arrived=False)
    assert shown.startswith(
        "the orchestrator never got the value of mul(f), which computed and sent it: lost on its way, "
        "so the backward pass never began; input(x) has 0 of 0 gradient(s)"
    )
    assert "never got" not in standing(circuit, waiting, set(circuit.leaves))[1]


def test_a_large_deployment_never_ready_says_a_brokers_queue_limit_may_be_why() -> None:
    """803 gates on a stock Mosquitto: it dropped the Ready messages past its 1,000-message queue,
    and the page said only that 586 gates were not ready (all of them were)."""
    big = Runner(compile_source(" + ".join(f"x*{i}" for i in range(300))), "big", BrokerAddress.parse("mqtt://h:1"))
    said = r"drops the Ready messages of \d+ gates: broker/mosquitto.conf lifts it$"
    with pytest.raises(GatesNotReady, match=said):
        asyncio.run(big.wait_ready(0.01))
    small = Runner(compile_source("x+y"), "small", BrokerAddress.parse("mqtt://h:1"))
    with pytest.raises(GatesNotReady, match=r"not ready after 0.01 s: f, x, y$"):
        asyncio.run(small.wait_ready(0.01))


def test_only_faults_that_can_lose_or_delay_a_message_are_named_with_a_timeout() -> None:
    """A host that only duplicates was told it "may have dropped or delayed" what was missing."""
    assert [_loses(f) for f in ("", "dup=1", "reorder", "dup=0.2,reorder,seed=3")] == [False] * 4
    assert [_loses(f) for f in ("drop=0.1", "delay=5ms", "dup=0.1,delay=0-2ms", "not faults")] == [True] * 4
