"""Training: micrograd's demo loop, over any engine that can take a step.

    for k in range(steps):
        loss, accuracy = forward and backward over the batch of step k
        every parameter -= (1.0 - 0.9 * k / steps) * its gradient

An engine takes the steps: `ReferenceEngine` in this process with numpy
(orchestrator/tensor_reference.py), or the mesh (orchestrator/tensor_mesh.py), where every
gate and every parameter is an actor and every array a frame through the broker. The loop is
the same for both, so their records can be compared step by step, with each other and with
micrograd. After every step the parameters can be written to a checkpoint; a run resumed
from it takes the same batches and learning rates as one that was never interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from gates.tensor_ops import Array
from orchestrator.checkpoint import Checkpoint, save
from orchestrator.errors import InputError
from orchestrator.mlp import batch_indices, build, make_batch
from orchestrator.moons import Points
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.tensor_reference import ReferenceDomainError, evaluate, forward_backward, sgd


@dataclass(frozen=True)
class StepOutcome:
    """What a step tells the trainer: the loss, and the values of the observed gates (the scores)."""

    loss: float
    observed: dict[str, Array]


class Engine(Protocol):
    """Something that holds the parameters and takes training steps."""

    async def load(self, params: Mapping[str, Array], step: int) -> None:
        """Give every parameter its tensor, as of step `step`."""

    async def step(self, step: int, lr: float, feeds: Mapping[str, Array]) -> StepOutcome:
        """Forward and backward over `feeds`, then every parameter's update with `lr`."""

    def params(self) -> dict[str, Array]:
        """The parameters as of the last completed step."""


class ReferenceEngine:
    """The steps in this process, with numpy: the oracle, and the fastest way to train."""

    def __init__(self, circuit: TensorCircuit) -> None:
        self.circuit = circuit
        self._params: dict[str, Array] = {}

    async def load(self, params: Mapping[str, Array], step: int) -> None:
        self._params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}

    async def step(self, step: int, lr: float, feeds: Mapping[str, Array]) -> StepOutcome:
        try:
            done = forward_backward(self.circuit, self._params, feeds)
        except ReferenceDomainError as exc:  # as the mesh's gate would fail the step: one line
            raise NotFinite(f"step {step}: {exc}") from exc
        self._params = sgd(self._params, done.grads, lr)
        return StepOutcome(float(done.values[self.circuit.output]), {g: done.values[g] for g in self.circuit.observe})

    def params(self) -> dict[str, Array]:
        return dict(self._params)


def learning_rate(step: int, steps: int) -> float:
    """micrograd's demo schedule, 1.0 - 0.9 * k / 100 for its 100 steps."""
    return 1.0 - 0.9 * step / steps


def accuracy(scores: Array, labels: Array) -> float:
    """The share of points whose score has the label's sign, as the demo counts it."""
    right = (labels > 0) == (scores > 0)
    return int(right.sum()) / len(right)


class NotFinite(InputError):
    """Parameters whose output overflows on the data: diverged, or data far from unit scale."""


def fit(params: Mapping[str, Array], data: Points) -> tuple[float, float]:
    """The loss and accuracy of `params` on every point of `data`, by the numpy reference: what
    a training ends with. A step's record cannot say it: its loss is taken before its update."""
    circuit = build(len(data))
    batch = make_batch(data, np.arange(len(data), dtype=np.intp), 1)
    try:
        values = evaluate(circuit, params, batch.feeds)
    except ReferenceDomainError as exc:
        raise NotFinite(f"the loss on all {len(data)} points cannot be computed ({exc})") from exc
    scores = np.concatenate([values[name].reshape(-1) for name in circuit.observe])
    return float(values[circuit.output]), accuracy(scores, batch.labels)


@dataclass(frozen=True)
class StepRecord:
    step: int
    loss: float
    accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class Schedule:
    """What to train: steps, batch, replicas, and the seed that picks partial batches."""

    steps: int = 100
    batch: int = 100
    replicas: int = 1
    seed: int = 1337

    def check(self, points: int) -> None:
        if self.steps < 1:
            raise InputError("--steps: at least 1")
        if not 1 <= self.batch <= points:
            raise InputError(f"--batch: between 1 and the {points} points of the data")
        if not 1 <= self.replicas <= self.batch:
            raise InputError(f"--replicas: between 1 and the batch size ({self.batch})")


@dataclass
class Training:
    """A training run's record: one StepRecord per step taken (by this process)."""

    records: list[StepRecord] = field(default_factory=list)
    params: dict[str, Array] = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return sum(r.seconds for r in self.records) / len(self.records) if self.records else 0.0


def check_start(schedule: Schedule, start: Checkpoint, data: Points) -> None:
    """InputError unless `start` (a checkpoint resumed) continues this schedule on this data:
    said before training begins, not after its progress bar has been drawn."""
    fingerprint = data.fingerprint()  # first: another data set also changes the default --batch (all its points)
    if start.data and start.data != fingerprint:
        raise InputError(
            f"the starting point was trained on another data set (fingerprint {start.data}, this one's "
            f"{fingerprint}); resume with the same --data"
        )
    schedule.check(len(data))
    made = (start.seed, start.steps, start.batch)
    if made == (schedule.seed, schedule.steps, schedule.batch) and start.step > schedule.steps:
        raise InputError(
            f"the starting point is step {start.step}, past the last step of its own schedule "
            f"(--steps {start.steps}): not a checkpoint `gatemesh train` writes"
        )
    if made != (schedule.seed, schedule.steps, schedule.batch):
        made_by = f"--steps {start.steps} --batch {start.batch} --seed {start.seed}"
        asked = f"--steps {schedule.steps} --batch {schedule.batch} --seed {schedule.seed}"
        raise InputError(
            f"the starting point is step {start.step} of {made_by}; resume with the same schedule (asked: {asked})"
        )
    if start.replicas is not None and start.replicas != schedule.replicas:
        raise InputError(
            f"the starting point is step {start.step} of --replicas {start.replicas}; resume with --replicas "
            f"{start.replicas} (asked: {schedule.replicas}): other replicas add the batch's gradients in another "
            "order, and the parameters would differ from an unbroken run's in their last bits"
        )


async def train(
    engine: Engine,
    circuit: TensorCircuit,
    data: Points,
    schedule: Schedule,
    start: Checkpoint,
    *,
    checkpoint: Path | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> Training:
    """Take steps start.step .. schedule.steps - 1 from the start's parameters."""
    check_start(schedule, start, data)
    fingerprint = data.fingerprint()
    await engine.load(start.params, start.step)
    done = Training()
    for k in range(start.step, schedule.steps):
        batch = make_batch(data, batch_indices(len(data), schedule.batch, schedule.seed, k), schedule.replicas)
        lr = learning_rate(k, schedule.steps)
        began = time.perf_counter()
        outcome = await engine.step(k, lr, batch.feeds)
        seconds = time.perf_counter() - began
        scores = np.concatenate([outcome.observed[name].reshape(-1) for name in circuit.observe])
        record = StepRecord(k, outcome.loss, accuracy(scores, batch.labels), lr, seconds)
        done.records.append(record)
        if checkpoint is not None:
            after = Checkpoint(
                engine.params(), k + 1, schedule.seed, schedule.steps, schedule.batch, fingerprint, schedule.replicas
            )
            save(checkpoint, after)
        if on_step is not None:
            on_step(record)
    done.params = engine.params()
    return done
