"""The same network with one scalar gate per multiply: micrograd's own graph, as a gatemesh program.

Every weight is an input (`W1_3_0` is row 3, column 0 of the tensor W1); each point and label
is a constant. The program is written in micrograd's order of operations (a neuron is
`b + w0*x0 + w1*x1 + ...`, the hinge `relu(1 + -y*score)`, the penalty `alpha * (p*p + ...)`),
so a pass computes micrograd's loss and gradients with the same roundings but for the order
in which gradients at a fork are added. A training step is one pass (run on the mesh or by the
scalar reference) and the same SGD update as the tensor trainer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import numpy as np

from gates.param import sgd_update
from gates.tensor_ops import Array
from orchestrator import reference as scalar_reference
from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.mlp import ALPHA, SIZES, build, param_names
from orchestrator.moons import Points
from orchestrator.result import RunResult
from orchestrator.tensor_reference import evaluate
from orchestrator.train import StepOutcome


def scalar_name(param: str, *index: int) -> str:
    return "_".join([param, *map(str, index)])


def program(points: Points, indices: Sequence[int], *, sizes: Sequence[int] = SIZES, alpha: float = ALPHA) -> str:
    """The demo's loss over the points `indices`, one assignment per neuron and point."""
    lines: list[str] = []
    losses = []
    for n in indices:
        previous = [f"({float(value)!r})" for value in points.X[n]]
        for layer in range(1, len(sizes)):
            current = []
            for j in range(sizes[layer]):
                terms = "".join(f" + {scalar_name(f'W{layer}', j, i)} * {x}" for i, x in enumerate(previous))
                body = f"{scalar_name(f'b{layer}', j)}{terms}"
                name = f"a{layer}_{n}_{j}"
                lines.append(f"{name} = relu({body})" if layer < len(sizes) - 1 else f"{name} = {body}")
                current.append(name)
            previous = current
        lines.append(f"l_{n} = relu(1 + ({-float(points.y[n])!r}) * {previous[0]})")
        losses.append(f"l_{n}")
    squares = [f"{name} * {name}" for name in scalar_params(sizes)]
    lines.append(f"data = ({' + '.join(losses)}) * {1.0 / len(indices)!r}")
    lines.append(f"reg = {alpha!r} * ({' + '.join(squares)})")
    lines.append("loss = data + reg")
    return "\n".join(lines)


def scalar_params(sizes: Sequence[int] = SIZES) -> list[str]:
    """Every scalar weight's input name, in micrograd's order."""
    names = []
    for layer in range(1, len(sizes)):
        for j in range(sizes[layer]):
            names += [scalar_name(f"W{layer}", j, i) for i in range(sizes[layer - 1])]
            names.append(scalar_name(f"b{layer}", j))
    return names


def circuit(points: Points, indices: Sequence[int], *, sizes: Sequence[int] = SIZES) -> Circuit:
    return compile_source(program(points, indices, sizes=sizes), name=f"mlp-scalar{len(indices)}", output="loss")


def to_inputs(params: Mapping[str, Array]) -> dict[str, float]:
    """The tensors as the scalar circuit's inputs."""
    inputs: dict[str, float] = {}
    for name in param_names():
        for index in np.ndindex(params[name].shape):
            inputs[scalar_name(name, index[0]) if name.startswith("b") else scalar_name(name, *index)] = float(
                params[name][index]
            )
    return inputs


def to_tensors(values: Mapping[str, float], like: Mapping[str, Array]) -> dict[str, Array]:
    """Scalar gradients (or values) back into tensors shaped like `like`."""
    tensors: dict[str, Array] = {}
    for name, template in like.items():
        tensor = np.zeros_like(template)
        for index in np.ndindex(template.shape):
            tensor[index] = values[scalar_name(name, index[0]) if name.startswith("b") else scalar_name(name, *index)]
        tensors[name] = tensor
    return tensors


PassFunction = Callable[[Mapping[str, float]], Awaitable[RunResult]]
"""One forward and backward pass of the scalar circuit: `Runner.run` on the mesh, or the reference."""


class ScalarEngine:
    """Training steps on the scalar circuit: one pass for the loss and every weight's gradient,
    then the parameter actors' SGD update, here. The data is compiled into the circuit, so the
    feeds must be the full batch it was compiled for; the accuracy's scores are computed from
    the weights in this process (the scalar circuit's output is the loss alone)."""

    def __init__(self, circuit: Circuit, run_pass: PassFunction) -> None:
        self.circuit = circuit
        self.run_pass = run_pass
        self._params: dict[str, Array] = {}

    async def load(self, params: Mapping[str, Array], step: int) -> None:
        self._params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}

    async def step(self, step: int, lr: float, feeds: Mapping[str, Array]) -> StepOutcome:
        scores = forward_scores(self._params, feeds["X"])
        result = await self.run_pass(to_inputs(self._params))
        grads = to_tensors(result.grads, self._params)
        self._params = {name: sgd_update(value, lr, grads[name]) for name, value in self._params.items()}
        return StepOutcome(result.value, {"score": scores})

    def params(self) -> dict[str, Array]:
        return dict(self._params)


def forward_scores(params: Mapping[str, Array], X: Array) -> Array:
    """The scores of points X (shape (2, N)) by the tensor ops, in this process."""
    circuit = build(X.shape[1])
    feeds = {"X": X, "y": np.ones((1, X.shape[1]))}
    return evaluate(circuit, params, feeds)["score"]


def reference_pass(circuit: Circuit) -> PassFunction:
    """The scalar in-process oracle as a pass function."""

    async def run(inputs: Mapping[str, float]) -> RunResult:
        return scalar_reference.evaluate(circuit, inputs)

    return run
