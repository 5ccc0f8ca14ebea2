"""micrograd's own demo training loop: the oracle the trainers are checked against.

This is the loop of micrograd's demo.ipynb, unchanged but for two things that do not touch
its arithmetic: the batch of each step is given (the demo draws it from numpy's global
generator), and the garbage collector runs once per step (micrograd's backward() leaves a
reference cycle holding the whole graph, and the default collector spends most of a step
tracing it; see bench/train.py for micrograd timed with its defaults).
"""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from micrograd.engine import Value  # type: ignore[import-untyped]
from micrograd.nn import MLP  # type: ignore[import-untyped]

from gates.tensor_ops import Array
from orchestrator.mlp import Indices
from orchestrator.moons import Points, load

ALPHA = 1e-4


@dataclass(frozen=True)
class Step:
    loss: float
    accuracy: float


def model(seed: int, sizes: Sequence[int] = (2, 16, 16, 1)) -> MLP:
    random.seed(seed)
    return MLP(sizes[0], list(sizes[1:]))


def params_by_name(net: MLP) -> dict[str, Array]:
    """micrograd's parameters in the tensor circuit's names: W{l}[j, i] is layer l's neuron j's w[i]."""
    found: dict[str, Array] = {}
    for number, layer in enumerate(net.layers, start=1):
        found[f"W{number}"] = np.array([[w.data for w in neuron.w] for neuron in layer.neurons], dtype=np.float64)
        found[f"b{number}"] = np.array([[neuron.b.data] for neuron in layer.neurons], dtype=np.float64)
    return found


def demo_step(net: MLP, X: list[list[float]], y: list[float], k: int, steps: int = 100) -> Step:
    """One iteration of the demo: loss(), zero_grad(), backward(), the SGD update."""
    inputs = [list(map(Value, xrow)) for xrow in X]
    scores = list(map(net, inputs))
    losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores, strict=True)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = ALPHA * sum(p * p for p in net.parameters())
    total_loss = data_loss + reg_loss
    accuracy = [(yi > 0) == (scorei.data > 0) for yi, scorei in zip(y, scores, strict=True)]
    net.zero_grad()
    total_loss.backward()
    learning_rate = 1.0 - 0.9 * k / steps
    for p in net.parameters():
        p.data -= learning_rate * p.grad
    return Step(float(total_loss.data), sum(accuracy) / len(accuracy))


@contextmanager
def collected_per_step() -> Iterator[Callable[[], int]]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield lambda: gc.collect(0)
    finally:
        if was_enabled:
            gc.enable()


def train(points: Points, seed: int, steps: int, batches: Sequence[Indices] | None = None) -> tuple[list[Step], MLP]:
    """micrograd's demo training: every step's (loss, accuracy), and the trained network."""
    net = model(seed)
    record = []
    with collected_per_step() as collect:
        for k in range(steps):
            chosen = np.arange(len(points)) if batches is None else batches[k]
            record.append(demo_step(net, points.X[chosen].tolist(), points.y[chosen].tolist(), k, steps))
            collect()
    return record, net


@functools.cache
def demo_run(seed: int = 1337, steps: int = 100) -> tuple[tuple[Step, ...], dict[str, Array]]:
    """The full demo on the built-in moons (computed once per test process: ~0.4 s of CPU a step)."""
    record, net = train(load(), seed, steps)
    return tuple(record), params_by_name(net)
