"""Evaluate a circuit in this process with the same ops: the oracle the mesh is checked against.

A plain topological walk, forward then backward, with gradients accumulated per gate, exactly
as micrograd does it, but read from the circuit instead of from objects. Sums use math.fsum,
as the gates do, so a correct mesh agrees with this to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gates import ops
from orchestrator.circuit import Circuit
from orchestrator.errors import InputError
from orchestrator.result import RunResult


class ReferenceDomainError(ArithmeticError):
    """A gate's op is undefined at these inputs (the mesh reports the same as a GateFailed)."""

    def __init__(self, gate: str, reason: str) -> None:
        self.gate = gate
        super().__init__(f"{gate}: {reason}")


def missing_inputs(circuit: Circuit, inputs: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """The circuit's inputs without a value, and those of them nothing reads (any value will do)."""
    missing = [name for name in circuit.inputs if name not in inputs]
    return missing, [name for name in missing if not circuit.readers[name]]


def check_inputs(circuit: Circuit, inputs: Mapping[str, float]) -> None:
    """Every circuit input has a finite value and no value names something else."""
    missing, unread = missing_inputs(circuit, inputs)
    unknown = sorted(set(inputs) - set(circuit.inputs))
    if missing:
        also = f"; not inputs of this circuit: {listed(unknown)}" if unknown else ""
        if unread:
            also += f"; nothing reads {listed(unread)}: any value will do, and its gradient is 0"
        raise InputError(f"no value for input(s): {listed(missing)} (give them as name=value){also}")
    if unknown:
        raise InputError(f"not inputs of this circuit: {listed(unknown)}; inputs: {listed(circuit.inputs)}")
    bad = [name for name, value in inputs.items() if not math.isfinite(value)]
    if bad:
        raise InputError(f"input values must be finite numbers: {', '.join(bad)}")


def listed(names: list[str], shown: int = 20) -> str:
    """The names, the first `shown` of them and how many more (a circuit may have thousands)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def evaluate(circuit: Circuit, inputs: Mapping[str, float]) -> RunResult:
    """Value of the output and d(output)/d(input) for every input."""
    check_inputs(circuit, inputs)
    values: dict[str, float] = {}
    for g in circuit.order:
        op = ops.OPS[g.op]
        if op.leaf:  # given, as the gates are: fed by the run, or the constant's parameter
            given = inputs[g.id] if op.fed else g.param
            assert given is not None, "a validated circuit gives every constant its parameter"
            values[g.id] = float(given)
            continue
        try:
            values[g.id] = ops.forward(op, [values[s] for s in g.inputs], g.param)
        except ops.DomainError as exc:
            raise ReferenceDomainError(g.id, str(exc)) from exc

    contributions: dict[str, list[float]] = {g.id: [] for g in circuit.gates}
    contributions[circuit.output].append(1.0)
    for g in reversed(circuit.order):
        if not g.inputs:
            continue
        total = math.fsum(contributions[g.id])
        try:
            local = ops.local_grads(ops.OPS[g.op], [values[s] for s in g.inputs], values[g.id], g.param)
        except ops.DomainError as exc:
            raise ReferenceDomainError(g.id, str(exc)) from exc
        for source, grad in zip(g.inputs, local, strict=True):
            contributions[source].append(total * grad)
    grads = {name: math.fsum(contributions[name]) for name in circuit.inputs}
    return RunResult(value=values[circuit.output], grads=grads)
