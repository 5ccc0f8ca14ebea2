"""Faults between the gates and the broker: duplicates, delays and reordering change nothing;
drops end a run correctly or with an error that names the gates it waits on; never a hang."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from gates.faults import Faults
from gates.transport import BrokerAddress, client
from orchestrator import runner as runner_module
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, in_process, on_deployment, undeploy
from orchestrator.errors import RunTimeout
from orchestrator.examples import EXAMPLES
from orchestrator.reference import evaluate
from orchestrator.result import RunResult
from tests.processes import GateHostProcess
from tests.strategies import random_source
from tests.tasks import cancelled

pytestmark = pytest.mark.integration

CONCURRENT = 50
T = TypeVar("T")


def random_inputs(rng: random.Random, names: list[str]) -> dict[str, float]:
    return {name: round(rng.uniform(-2, 2), 3) for name in names}


async def test_duplicates_delays_and_reordering_never_change_a_result(mosquitto_url: str) -> None:
    """2,000 runs under dup=0.2,delay=0-5ms,reorder: every value and gradient is the reference's, bit for bit."""
    broker = BrokerAddress.parse(mosquitto_url)
    rng = random.Random(2026)
    sources = [example.source for example in EXAMPLES] + [random_source(rng, rng.randint(2, 8)) for _ in range(16)]
    runs_each = [150] * len(EXAMPLES) + [50] * 16
    assert sum(runs_each) == 2000
    checked = 0
    for index, (source, runs) in enumerate(zip(sources, runs_each, strict=True)):
        circuit = compile_source(source)
        faults = Faults.parse(f"dup=0.2,delay=0-5ms,reorder,seed={index}")
        cases = [random_inputs(rng, circuit.inputs) for _ in range(runs)]
        if index < len(EXAMPLES):
            cases[0] = dict(EXAMPLES[index].inputs)  # the notes' own numbers among them
        async with in_process(circuit, broker, faults=faults) as runner:
            results = await _run_all(runner.run, cases)
        for case, result in zip(cases, results, strict=True):
            assert result == evaluate(circuit, case), (source, case)
            checked += 1
    assert checked == 2000


async def test_drops_end_every_run_correct_or_named_never_wrong_never_hung(mosquitto_url: str) -> None:
    """1,000 runs at drop=0.05: each completes with the reference's numbers, or fails within its
    timeout with a RunTimeout that names the gates still waiting."""
    broker = BrokerAddress.parse(mosquitto_url)
    rng = random.Random(5)
    circuit = compile_source("q = w0*x0 + w1*x1 + w2; f = sigmoid(q)")
    timeout = 1.0
    outcomes: list[RunResult | RunTimeout] = []
    durations: list[float] = []
    cases = [random_inputs(rng, circuit.inputs) for _ in range(1000)]

    async def one(case: dict[str, float]) -> RunResult | RunTimeout:
        started = time.monotonic()
        try:
            return await runner.run(case, timeout=timeout)
        except RunTimeout as exc:
            return exc
        finally:
            durations.append(time.monotonic() - started)

    async with in_process(circuit, broker, faults=Faults.parse("drop=0.05,seed=11")) as runner:
        runner.probe_window = 0.2
        outcomes = await _run_all(one, cases)
    completed = [(c, o) for c, o in zip(cases, outcomes, strict=True) if isinstance(o, RunResult)]
    failed = [o for o in outcomes if isinstance(o, RunTimeout)]
    for case, outcome in zip(cases, outcomes, strict=True):  # a lost message loses its number, not the others
        if isinstance(outcome, RunTimeout):
            expected = evaluate(circuit, case)
            assert outcome.arrived.value in (None, expected.value)
            assert outcome.arrived.grads == {name: expected.grads[name] for name in outcome.arrived.grads}
    assert any(exc.arrived.grads for exc in failed), "some failed run got some of its gradients"
    assert len(completed) + len(failed) == 1000
    assert all(result == evaluate(circuit, case) for case, result in completed)
    assert completed, "some runs must get through at drop=0.05"
    assert failed, "at drop=0.05 over 1,000 runs some message of some run is lost"
    for exc in failed:
        assert exc.waiting_on, exc
        assert f"did not finish within {timeout:g} s; not finished: " in str(exc)
        told = str(exc).split("; not finished: ")[1].split("; arrived: ")[0].split("; and ")[0].split("; ")
        assert [_telling(gate) for gate in told] == sorted(_telling(gate) for gate in told), (
            told
        )  # where it stopped first
    assert max(durations) < timeout + runner.probe_window + 1.0  # bounded: never a hang
    print(f"drop=0.05: {len(completed)} completed, {len(failed)} failed with named gates")


def _telling(told: str) -> int:
    """Where a gate's line in a timeout says the pass stopped: no answer, waiting for a value, not
    reached, a lost report, waiting for gradients."""
    for rank, words in enumerate(("waits for input", "has not heard", "finished, but", "gradient(s)")):
        if words in told:
            return rank + 1
    return 0


async def test_a_retry_from_the_inputs_recovers_a_dropped_run(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = compile_source("q = x + y; f = q * z")
    # about half the attempts at drop=0.05 lose a message; 31 attempts all failing is ~1e-9 per run
    async with in_process(circuit, broker, faults=Faults.parse("drop=0.05,seed=3")) as runner:
        runner.probe_window = 0.1
        cases: list[dict[str, float]] = [{"x": -2, "y": 5, "z": -4}] * 40
        results = await _run_all(lambda case: runner.run(case, timeout=0.5, retries=30), cases)
    assert all(r == RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0}) for r in results)


async def test_a_run_whose_reports_arrive_while_its_gates_are_probed_returns_its_result(mosquitto_url: str) -> None:
    """On a busy machine a run's last reports can arrive after its timeout, while the orchestrator probes
    the gates: the run finished, so it returns its result (a RunTimeout would name no unfinished gate).

    Every gate message waits 300 ms: the output's value arrives after ~0.9 s (before the 1.4 s
    timeout), the last gradient report after ~1.8 s (inside the 1.5 s probe window that follows)."""
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = compile_source("q = x + y; f = q * z")
    async with in_process(circuit, broker, faults=Faults.parse("delay=300ms")) as runner:
        runner.probe_window = 1.5
        result = await runner.run({"x": -2, "y": 5, "z": -4}, timeout=1.4)
    assert result == RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})


async def test_a_cancelled_run_is_released_so_that_its_gates_forget_it(mosquitto_url: str) -> None:
    """A page's restart cancels the run in flight: its gates are told to free its state (they
    kept it until max_open_runs pushed it out)."""
    broker = BrokerAddress.parse(mosquitto_url)
    async with (
        in_process(compile_source("q = x + y; f = q * z"), broker, faults=Faults.parse("delay=300ms")) as runner,
        client(broker) as spy,
        asyncio.TaskGroup() as group,
    ):
        await spy.subscribe(f"gatemesh/{runner.deployment}/control", qos=1)
        run = group.create_task(runner.run({"x": -2, "y": 5, "z": -4}, timeout=10))
        await asyncio.sleep(0.2)  # the feeds are out; every gate's message waits 300 ms
        await cancelled(run)
        async with asyncio.timeout(5):
            message = await anext(aiter(spy.messages))
    assert isinstance(message.payload, bytes)
    assert json.loads(message.payload)["type"] == "release"


async def _run_all(run: Callable[[dict[str, float]], Coroutine[Any, Any, T]], cases: list[dict[str, float]]) -> list[T]:
    """Every case, CONCURRENT runs in flight at a time; results in the order of the cases."""
    results: list[T] = []
    for start in range(0, len(cases), CONCURRENT):
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(case)) for case in cases[start : start + CONCURRENT]]
        results += [task.result() for task in tasks]
    return results


async def test_hosts_with_faults_give_identical_results(mosquitto_url: str) -> None:
    """The same injector on gate host processes (`python -m gates --faults ...`)."""
    broker = BrokerAddress.parse(mosquitto_url)
    tag = secrets.token_hex(3)
    names = [f"faulty{i}-{tag}" for i in range(2)]
    hosts = [
        GateHostProcess(
            mosquitto_url,
            name,
            argv=["--broker", mosquitto_url, "--name", name, "--faults", f"dup=0.3,delay=0-10ms,reorder,seed={i}"],
        )
        for i, name in enumerate(names)
    ]
    circuit = compile_source("q = w0*x0 + w1*x1 + w2; f = sigmoid(q) * tanh(q)")
    rng = random.Random(9)
    cases = [random_inputs(rng, circuit.inputs) for _ in range(200)]
    try:
        for host in hosts:
            await asyncio.to_thread(host.wait_online)
        await deploy_to_hosts(circuit, f"faulty-{tag}", broker, hosts=names)
        async with on_deployment(f"faulty-{tag}", broker) as runner:
            results = await _run_all(runner.run, cases)
        await undeploy(f"faulty-{tag}", broker)
    finally:
        for host in hosts:
            host.stop()
    assert all(result == evaluate(circuit, case) for case, result in zip(cases, results, strict=True))


async def test_gates_that_answer_the_probe_late_are_waited_for(
    mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every gate's messages wait 400 ms, its answer to the probe too: past the 0.1 s window,
    the runner waits on for the gates that have not answered (here up to 0.3 s a gate), so the
    timeout says where each stands instead of "did not answer" (1,200 gates on the embedded
    broker answered after the window)."""
    monkeypatch.setattr(runner_module, "PROBE_WAIT_PER_GATE", 0.3)
    broker = BrokerAddress.parse(mosquitto_url)
    async with in_process(compile_source("q = x + y; f = q * z"), broker, faults=Faults.parse("delay=400ms")) as runner:
        runner.probe_window = 0.1
        with pytest.raises(RunTimeout) as failed:
            await runner.run({"x": -2, "y": 5, "z": -4}, timeout=0.2)
    assert "did not answer" not in str(failed.value)
    assert "mul(f) has not heard of the run" in str(failed.value)
