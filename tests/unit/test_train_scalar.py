"""The scalar-gate version of micrograd's network (one gate per multiply) against micrograd itself."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator import mlp, mlp_scalar, moons
from orchestrator.checkpoint import Checkpoint
from orchestrator.moons import Points
from orchestrator.train import ReferenceEngine, Schedule, train
from tests import micrograd_oracle

POINTS = 8


def few_points() -> Points:
    data = moons.load()
    return Points(data.X[:POINTS], data.y[:POINTS])


def test_the_program_is_micrographs_graph() -> None:
    circuit = mlp_scalar.circuit(few_points(), range(POINTS))
    assert len(circuit.inputs) == 337
    assert circuit.inputs[:3] == ["b1_0", "W1_0_0", "W1_0_1"]  # as the program reads them first
    assert set(circuit.inputs) == set(mlp_scalar.scalar_params())
    params = mlp.micrograd_init(4)
    assert mlp_scalar.to_tensors(mlp_scalar.to_inputs(params), params)["W2"].tolist() == params["W2"].tolist()


def test_scalar_gates_train_as_micrograd_does() -> None:
    data, seed, steps = few_points(), 11, 3
    schedule = Schedule(steps=steps, batch=POINTS, seed=seed)
    start = Checkpoint(mlp.micrograd_init(seed), 0, seed, steps, POINTS)
    circuit = mlp_scalar.circuit(data, range(POINTS))
    engine = mlp_scalar.ScalarEngine(circuit, mlp_scalar.reference_pass(circuit))
    scalar = asyncio.run(train(engine, mlp.build(POINTS), data, schedule, start))
    expected, net = micrograd_oracle.train(data, seed, steps)
    for theirs, ours in zip(expected, scalar.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=1e-9, abs=0)
        assert ours.accuracy == theirs.accuracy
    final = micrograd_oracle.params_by_name(net)
    for name, value in scalar.params.items():
        assert value == pytest.approx(final[name], rel=1e-9, abs=1e-15), name
    tensor_circuit = mlp.build(POINTS)
    tensor = asyncio.run(train(ReferenceEngine(tensor_circuit), tensor_circuit, data, schedule, start))
    assert [r.loss for r in scalar.records] == pytest.approx([r.loss for r in tensor.records], rel=1e-12)
