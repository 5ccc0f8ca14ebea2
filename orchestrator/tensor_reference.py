"""A tensor circuit evaluated in this process: the numpy oracle the mesh is checked against.

A topological walk forward, then backward, with the same op table (gates/tensor_ops.py) and
the same summation of gradient contributions (keyed by (sender, port), added in key order)
as the gates, and the same update as a parameter actor. A correct mesh therefore agrees with
this to the last bit, and this agrees with micrograd to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gates import tensor_ops
from gates.param import sgd_update
from gates.protocol import ORCHESTRATOR
from gates.tensor_core import sum_in_key_order
from gates.tensor_ops import Array
from orchestrator.errors import InputError
from orchestrator.tensor_circuit import TensorCircuit


class ReferenceDomainError(ArithmeticError):
    """An op produced a non-finite value at this gate (the mesh fails the step the same way)."""

    def __init__(self, gate: str, reason: str) -> None:
        self.gate = gate
        super().__init__(f"{gate}: {reason}")


@dataclass(frozen=True)
class Pass:
    """One forward and backward pass: every gate's value and the gradient total of each parameter."""

    values: dict[str, Array]
    grads: dict[str, Array]


def check_feeds(circuit: TensorCircuit, values: Mapping[str, Array], leaves: list[str], what: str) -> None:
    """Every leaf of `leaves` has a finite array of its declared shape, and nothing else is given."""
    missing = [name for name in leaves if name not in values]
    unknown = sorted(set(values) - set(leaves))
    if missing or unknown:
        raise InputError(f"{what}: missing {', '.join(missing) or 'none'}; unknown {', '.join(unknown) or 'none'}")
    for name in leaves:
        value = values[name]
        if value.shape != circuit.shapes[name]:
            raise InputError(f"{what} {name!r} must have shape {circuit.shapes[name]}, got {value.shape}")
        if not np.isfinite(value).all():
            raise InputError(f"{what} {name!r} has a non-finite number")


def evaluate(circuit: TensorCircuit, params: Mapping[str, Array], feeds: Mapping[str, Array]) -> dict[str, Array]:
    """Every gate's value for these parameters and data: the forward pass alone."""
    check_feeds(circuit, params, circuit.params, "parameter")
    check_feeds(circuit, feeds, circuit.inputs, "input")
    values: dict[str, Array] = {}
    for g in circuit.order:
        if g.op == "param":
            values[g.id] = np.asarray(params[g.id], dtype=np.float64)
        elif g.op == "input":
            values[g.id] = np.asarray(feeds[g.id], dtype=np.float64)
        else:
            try:
                op = tensor_ops.TENSOR_OPS[g.op]
                values[g.id] = tensor_ops.forward(op, tuple(values[s] for s in g.inputs), g.param)
            except tensor_ops.DomainError as exc:
                raise ReferenceDomainError(g.id, str(exc)) from exc
    return values


def forward_backward(circuit: TensorCircuit, params: Mapping[str, Array], feeds: Mapping[str, Array]) -> Pass:
    """Values of every gate, and the summed gradient contributions of every parameter."""
    values = evaluate(circuit, params, feeds)
    contributions: dict[str, dict[tuple[str, int], Array]] = {g.id: {} for g in circuit.gates}
    contributions[circuit.output][(ORCHESTRATOR, 0)] = np.asarray(1.0)
    for g in reversed(circuit.order):
        if not g.inputs or not contributions[g.id]:
            continue
        dout = sum_in_key_order(contributions[g.id])
        inputs = tuple(values[s] for s in g.inputs)
        try:
            grads = tensor_ops.input_grads(tensor_ops.TENSOR_OPS[g.op], inputs, values[g.id], dout, g.param)
        except tensor_ops.DomainError as exc:
            raise ReferenceDomainError(g.id, str(exc)) from exc
        for port, (source, grad) in enumerate(zip(g.inputs, grads, strict=True)):
            if circuit.learns[source]:
                contributions[source][(g.id, port)] = grad
    return Pass(values, {name: sum_in_key_order(contributions[name]) for name in circuit.params})


def sgd(params: Mapping[str, Array], grads: Mapping[str, Array], lr: float) -> dict[str, Array]:
    """Every parameter's step, with the parameter actor's own update."""
    return {name: sgd_update(params[name], lr, grads[name]) for name in params}
