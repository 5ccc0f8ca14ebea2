"""The one-call Python API: `await run_circuit(circuit, {"x": -2, ...}, broker=url)`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from broker.launch import BrokerStartError, embedded
from gates.errors import TransportError
from gates.faults import Faults
from gates.lifecycle import leaves
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.errors import BrokerError, unwrap
from orchestrator.recorder import Recorder
from orchestrator.result import RunResult
from orchestrator.runner import Runner


async def run_circuit(
    circuit: Circuit | str,
    inputs: Mapping[str, float],
    *,
    broker: str | None = None,
    timeout: float = 10.0,
    trace: Path | str | Recorder | None = None,
    faults: Faults | None = None,
) -> RunResult:
    """Deploy the circuit's gates in this process, run one pass through the broker, tear down.

    `circuit` may be a Circuit or source text. Without `broker` the embedded broker is started.
    With `trace` the run is traced: its events go to that file (JSON lines, orchestrator/trace.py),
    or into that Recorder (its `.trace()` then holds them); the file is written even if the run fails.
    """
    if isinstance(circuit, str):
        circuit = compile_source(circuit)
    recorder = trace if isinstance(trace, Recorder) else Recorder(faults=faults) if trace is not None else None
    async with broker_url(broker) as url, deployed(circuit, url, recorder=recorder, faults=faults) as runner:
        try:
            return await runner.run(inputs, timeout=timeout)
        finally:
            if recorder is not None:
                await recorder.drain()
                if not isinstance(trace, Recorder) and trace is not None:
                    recorder.write(Path(trace))


@contextlib.asynccontextmanager
async def broker_url(broker: str | None) -> AsyncIterator[BrokerAddress]:
    """The given broker, or an embedded one started for the duration of the block."""
    if broker is not None:
        try:  # the URL alone: a ValueError of the block is not the broker's
            address = BrokerAddress.parse(broker)
            address.tls_context()  # a CA file that cannot be read: said before connecting
        except ValueError as exc:
            raise BrokerError(str(exc)) from exc
        yield address
        return
    try:
        async with embedded() as url:
            yield BrokerAddress.parse(url)
    except BrokerStartError as exc:
        raise BrokerError(str(exc)) from exc


@contextlib.asynccontextmanager
async def deployed(
    circuit: Circuit,
    broker: BrokerAddress,
    *,
    recorder: Recorder | None = None,
    faults: Faults | None = None,
) -> AsyncIterator[Runner]:
    """`deploy.in_process`, with failures inside the actors' task group surfaced as plain errors."""
    try:
        async with in_process(circuit, broker, recorder=recorder, faults=faults) as runner:
            yield runner
    except BaseExceptionGroup as group:
        raise _first_cause(group, broker) from group


def _first_cause(group: BaseExceptionGroup[BaseException], broker: BrokerAddress) -> BaseException:
    """The gatemesh error inside a task group's failure, or a BrokerError for a lost connection."""
    cause = unwrap(group)
    if cause is not group:
        return cause
    for leaf in leaves(group):
        if isinstance(leaf, TransportError):
            return BrokerError(f"lost the broker at {broker}: {leaf}")
    return group
