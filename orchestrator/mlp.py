"""micrograd's demo network as a tensor circuit, and its initial weights drawn as micrograd draws them.

MLP(2, [16, 16, 1]): each layer is D = W X + b (CS231n's layout: one column per point, W of
shape (out, in), b of shape (out, 1) broadcast over the columns), ReLU after every layer but
the last. The loss is the demo's: mean(relu(1 - y*score)) + alpha * sum of every parameter
squared. With R replicas the batch is split over R copies of the network that share the
parameters: each copy's hinge is weighted 1/N of the whole batch, so the copies' losses add up
to the mean, and each parameter receives R + 1 gradient contributions (one per copy, one from
its L2 penalty), which it sums before its step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gates.frame import MAX_ELEMENTS
from gates.tensor_ops import Array
from orchestrator.errors import InputError
from orchestrator.moons import Points
from orchestrator.tensor_circuit import MAX_TENSOR_GATES, TensorCircuit, TensorGateDef

SIZES = (2, 16, 16, 1)
ALPHA = 1e-4


def param_names(sizes: Sequence[int] = SIZES) -> list[str]:
    """W1, b1, W2, b2, ...: micrograd's parameter order (layer by layer, weights then bias)."""
    return [f"{kind}{layer}" for layer in range(1, len(sizes)) for kind in ("W", "b")]


def replica_sizes(batch: int, replicas: int) -> list[int]:
    """How many points each replica gets (as even as possible, the first ones one more)."""
    if not 1 <= replicas <= batch:
        raise ValueError(f"{replicas} replica(s) cannot split a batch of {batch}")
    return [len(part) for part in np.array_split(np.arange(batch), replicas)]


def prefix(replica: int, replicas: int) -> str:
    return "" if replicas == 1 else f"r{replica}."


def build(batch: int, *, replicas: int = 1, sizes: Sequence[int] = SIZES, alpha: float = ALPHA) -> TensorCircuit:
    """The training circuit for batches of `batch` points split over `replicas` copies."""
    gates, scores = _gates(batch, replicas, sizes, alpha)
    if len(gates) > MAX_TENSOR_GATES:
        one, two = (len(_gates(batch, copies, sizes, alpha)[0]) for copies in (1, 2))  # each copy adds two - one
        raise InputError(
            f"--replicas {replicas}: {len(gates):,} gates, more than the {MAX_TENSOR_GATES:,} a tensor circuit may "
            f"have; give at most {1 + (MAX_TENSOR_GATES - one) // (two - one)}"
        )
    return TensorCircuit(name="moons", gates=tuple(gates), output="loss", observe=tuple(scores))


def param_shapes(sizes: Sequence[int] = SIZES) -> dict[str, tuple[int, int]]:
    """Each parameter's shape: W of (out, in), b of (out, 1), whatever the batch and the replicas."""
    shapes: dict[str, tuple[int, int]] = {}
    for layer in range(1, len(sizes)):
        shapes[f"W{layer}"] = (sizes[layer], sizes[layer - 1])
        shapes[f"b{layer}"] = (sizes[layer], 1)
    return shapes


def _gates(batch: int, replicas: int, sizes: Sequence[int], alpha: float) -> tuple[list[TensorGateDef], list[str]]:
    """The circuit's gates, and its copies' score gates."""
    gates: list[TensorGateDef] = []

    def gate(id: str, op: str, *inputs: str, shape: tuple[int, ...] | None = None, param: float | None = None) -> str:
        gates.append(TensorGateDef(id=id, op=op, inputs=inputs, shape=shape, param=param))
        return id

    layers = range(1, len(sizes))
    for name, shape in param_shapes(sizes).items():
        gate(name, "param", shape=shape)
    hinges, scores = [], []
    for replica, points in enumerate(replica_sizes(batch, replicas)):
        p = prefix(replica, replicas)
        h = gate(f"{p}X", "input", shape=(sizes[0], points))
        y = gate(f"{p}y", "input", shape=(1, points))
        for layer in layers:
            z = gate(f"{p}mm{layer}", "matmul", f"W{layer}", h)
            last = layer == len(sizes) - 1
            z = gate(f"{p}score" if last else f"{p}z{layer}", "add", z, f"b{layer}")
            h = z if last else gate(f"{p}h{layer}", "relu", z)
        scores.append(h)
        hinges.append(gate(f"{p}hinge", "hinge", h, y, param=1.0 / batch))
    penalties = [gate(f"l2.{name}", "l2", name, param=alpha) for name in param_names(sizes)]
    data = _sum_tree(gate, hinges, "data")
    reg = _sum_tree(gate, penalties, "reg")
    gate("loss", "add", data, reg)
    return gates, scores


def fewest_replicas(batch: int, sizes: Sequence[int] = SIZES) -> int:
    """The fewest copies whose widest tensor (a layer's outputs for a copy's points) fits one
    frame (gates/frame.py): the copies split the batch."""
    per_copy = MAX_ELEMENTS // max(sizes)
    return -(-batch // per_copy)


def _sum_tree(gate: Callable[..., str], terms: list[str], name: str) -> str:
    """Add the terms pairwise in a balanced tree (fewer hops than a chain); the root is `name`."""
    level, counter = list(terms), 0
    while len(level) > 1:
        paired = []
        for index in range(0, len(level) - 1, 2):
            counter += 1
            root = len(level) == 2
            paired.append(gate(name if root else f"{name}.{counter}", "add", level[index], level[index + 1]))
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def micrograd_init(seed: int, sizes: Sequence[int] = SIZES) -> dict[str, Array]:
    """The weights micrograd's MLP(sizes[0], sizes[1:]) starts with after random.seed(seed).

    micrograd's Neuron draws random.uniform(-1, 1) for each of its weights in order and starts
    its bias at 0; layers and neurons are made in order. Row j of W is neuron j's weights.
    """
    rng = random.Random(seed)  # the same stream as the module functions after random.seed(seed)
    params: dict[str, Array] = {}
    for layer in range(1, len(sizes)):
        rows = [[rng.uniform(-1, 1) for _ in range(sizes[layer - 1])] for _ in range(sizes[layer])]
        params[f"W{layer}"] = np.array(rows, dtype=np.float64)
        params[f"b{layer}"] = np.zeros((sizes[layer], 1))
    return params


@dataclass(frozen=True)
class Batch:
    """One step's data, as the circuit's input leaves take it."""

    indices: Indices
    feeds: dict[str, Array]
    labels: Array
    """The batch's labels in replica order, to score the accuracy against."""


Indices = npt.NDArray[np.intp]


def batch_indices(points: int, batch: int, seed: int, step: int) -> Indices:
    """Which points step `step` trains on: all of them, in order, for a full batch; otherwise a
    sample that depends on (seed, step) only, so a resumed run sees the batches it would have."""
    if batch == points:
        return np.arange(points, dtype=np.intp)
    return np.random.default_rng([seed, step]).permutation(points)[:batch].astype(np.intp)


def make_batch(data: Points, indices: Indices, replicas: int) -> Batch:
    feeds: dict[str, Array] = {}
    for replica, part in enumerate(np.array_split(indices, replicas)):
        p = prefix(replica, replicas)
        feeds[f"{p}X"] = np.ascontiguousarray(data.X[part].T)
        feeds[f"{p}y"] = data.y[part][None, :].copy()
    return Batch(indices, feeds, data.y[indices])
