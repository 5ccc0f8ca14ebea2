"""The scale benchmark's big circuit: a 2-16-16-1 ReLU network over a batch of points, with a hinge loss.

Written out as a gatemesh program (one assignment per neuron and sample) and compiled, so
every multiply, add and ReLU of the batch is a gate of its own: the scalar graph the CS231n
notes draw, about 65,000 gates for 100 points. The weights are the inputs; the points and
their labels are constants.
"""

from __future__ import annotations

import random

from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source

SIZES = (2, 16, 16, 1)


def mlp_program(batch: int = 100, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines: list[str] = []
    losses = []
    for n in range(batch):
        point = [round(rng.uniform(-1, 1), 3) for _ in range(SIZES[0])]
        label = 1 if point[0] * point[1] > 0 else -1  # an XOR-like task: not linearly separable
        previous = [f"({value})" for value in point]
        for layer in range(1, len(SIZES)):
            current = []
            for j in range(SIZES[layer]):
                terms = " + ".join(f"w{layer}_{j}_{i} * {previous[i]}" for i in range(len(previous)))
                name = f"a{layer}_{n}_{j}"
                body = f"{terms} + b{layer}_{j}"
                lines.append(f"{name} = relu({body})" if layer < len(SIZES) - 1 else f"{name} = {body}")
                current.append(name)
            previous = current
        lines.append(f"l_{n} = relu(1 - ({label}) * {previous[0]})")  # hinge loss of sample n
        losses.append(f"l_{n}")
    lines.append(f"loss = ({' + '.join(losses)}) / {batch}")
    return "\n".join(lines)


def mlp_circuit(batch: int = 100) -> Circuit:
    return compile_source(mlp_program(batch), name=f"mlp{batch}")


if __name__ == "__main__":
    circuit = mlp_circuit()
    edges = sum(len(g.inputs) for g in circuit.gates)
    print(f"{len(circuit.gates)} gates, {edges} edges, {len(circuit.inputs)} weights")
