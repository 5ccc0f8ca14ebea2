"""Tensor circuits: shapes checked when built, errors that name the gate, the MLP's wiring, checkpoints."""

from __future__ import annotations

import asyncio
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from orchestrator import checkpoint, mlp, moons, tensor_deploy
from orchestrator.checkpoint import Checkpoint
from orchestrator.errors import CircuitError, DeployError, InputError
from orchestrator.tensor_circuit import MAX_TENSOR_GATES, TensorCircuit
from orchestrator.train import ReferenceEngine, Schedule, train

TINY: dict[str, Any] = {
    "name": "tiny",
    "output": "loss",
    "observe": ["score"],
    "gates": [
        {"id": "X", "op": "input", "shape": [2, 4]},
        {"id": "y", "op": "input", "shape": [1, 4]},
        {"id": "W", "op": "param", "shape": [1, 2]},
        {"id": "score", "op": "matmul", "inputs": ["W", "X"]},
        {"id": "loss", "op": "hinge", "inputs": ["score", "y"], "param": 0.25},
    ],
}


def with_gate(index: int, **changes: object) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(TINY))
    data["gates"][index].update(changes)
    return data


def test_a_valid_circuit_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    circuit = TensorCircuit.load(path)
    assert circuit.shapes == {"X": (2, 4), "y": (1, 4), "W": (1, 2), "score": (1, 4), "loss": ()}
    assert circuit.params == ["W"]
    assert circuit.inputs == ["X", "y"]
    spec = circuit.spec(circuit.by_id["score"])
    assert spec.needs_grad == (True, False)
    assert spec.input_shapes == ((1, 2), (2, 4))
    assert circuit.consumers == {"X": 0, "y": 0, "W": 1, "score": 1, "loss": 1}
    as_yaml = tmp_path / "tiny.YAML"  # YAML (JSON is YAML too), its suffix in any case
    as_yaml.write_text(yaml.safe_dump(TINY, sort_keys=False))
    assert TensorCircuit.load(as_yaml) == circuit


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            with_gate(2, shape=[1, 3]),
            "gate 'score' (matmul of W (1, 3), X (2, 4)): inner dimensions differ: (1, 3) @ (2, 4) (3 != 2)",
        ),
        (with_gate(1, shape=[1, 5]), "gate 'loss' (hinge of score (1, 4), y (1, 5)): scores (1, 4) and labels (1, 5)"),
        (with_gate(0, shape=None), "gates[0] (id 'X'): an 'input' leaf declares a 'shape'"),
        (with_gate(3, shape=[1, 4]), "only input and param leaves declare a shape"),
        (with_gate(3, op="conv"), "unknown op 'conv'"),
        (with_gate(4, param=None), "op 'hinge' needs a numeric 'param'"),
        (with_gate(3, inputs=["W", "Z"]), "input 'Z' is not a gate"),
        ({**TINY, "output": "score"}, "output 'score' must be a scalar (a loss), its shape is (1, 4)"),
    ],
)
def test_invalid_circuits_are_refused_naming_the_gate(data: dict[str, Any], says: str) -> None:
    with pytest.raises(CircuitError, match=re.escape(says)):
        TensorCircuit.from_data(data)


def test_the_mlp_wiring() -> None:
    circuit = mlp.build(100)
    assert circuit.shapes["W1"] == (16, 2)
    assert circuit.shapes["z1"] == (16, 100)
    assert circuit.shapes["score"] == (1, 100)
    assert circuit.observe == ("score",)
    assert circuit.consumers["W1"] == 2  # its matmul and its L2 penalty
    assert circuit.consumers["X"] == 0
    assert len(circuit.gates) == 29
    replicated = mlp.build(100, replicas=3)
    assert [replicated.shapes[f"r{r}.X"] for r in range(3)] == [(2, 34), (2, 33), (2, 33)]
    assert replicated.consumers["W2"] == 4  # three replicas' matmuls and the penalty
    assert replicated.observe == ("r0.score", "r1.score", "r2.score")


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    shapes = mlp.build(100).param_shapes
    params = mlp.micrograd_init(3)
    path = tmp_path / "c.npz"
    checkpoint.save(path, Checkpoint(params, 7, 3, 100, 100))
    loaded = checkpoint.load(path, shapes)
    assert (loaded.step, loaded.seed, loaded.steps, loaded.batch) == (7, 3, 100, 100)
    assert all(loaded.params[n].tobytes() == params[n].tobytes() for n in params)
    bad = dict(params)
    del bad["W3"]
    checkpoint.save(path, Checkpoint(bad, 1, 0))
    with pytest.raises(InputError, match="missing W3"):
        checkpoint.load(path, shapes)
    checkpoint.save(path, Checkpoint({**params, "W1": np.zeros((2, 16))}, 1, 0))
    with pytest.raises(InputError, match=r"W1 is float64 \(2, 16\); the network's is float64 \(16, 2\)"):
        checkpoint.load(path, shapes)
    path.write_bytes(b"not a zip")  # numpy would advise unpickling it
    with pytest.raises(
        InputError, match=r"c\.npz: not a \.npz checkpoint \(a zip of \.npy arrays, as --checkpoint writes\)$"
    ):
        checkpoint.load(path, shapes)
    path.write_bytes(b"PK\x03\x04 but cut short")
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        checkpoint.load(path, shapes)
    np.save(path.with_suffix(".npy"), params["W1"])
    with pytest.raises(InputError, match=r"c\.npy: one array, not a \.npz checkpoint"):
        checkpoint.load(path.with_suffix(".npy"), shapes)
    with zipfile.ZipFile(path, "w") as archive:  # a member without the .npy suffix reads as bytes
        archive.writestr("meta", json.dumps({"step": 1, "seed": 0, "steps": 100, "batch": 100}))
    with pytest.raises(InputError, match=r"not a \.npz checkpoint: meta is not an array"):
        checkpoint.load(path, shapes)
    np.savez(path, meta=np.array(json.dumps({"step": True, "seed": 0, "steps": 100, "batch": 100})))
    with pytest.raises(InputError, match="no valid meta"):  # true is not the integer 1
        checkpoint.load(path, shapes)
    np.savez(path, meta=np.array('{"step": ' + "9" * 5000 + "}"))  # past the digits Python reads
    with pytest.raises(InputError, match="no valid meta"):
        checkpoint.load(path, shapes)


def test_a_checkpoint_names_its_data_set_and_resuming_on_another_is_refused(tmp_path: Path) -> None:
    circuit, moons_points = mlp.build(20), moons.load()
    fewer = moons.Points(moons_points.X[:20], moons_points.y[:20])
    other = moons.Points(fewer.X[::-1].copy(), fewer.y[::-1].copy())  # the same points, in another order
    assert len({fewer.fingerprint(), other.fingerprint()}) == 2
    path = tmp_path / "c.npz"
    schedule = Schedule(steps=2, batch=20, seed=3)
    start = Checkpoint(mlp.micrograd_init(3), 0, 3, 2, 20)
    asyncio.run(train(ReferenceEngine(circuit), circuit, fewer, schedule, start, checkpoint=path))
    resumed = checkpoint.load(path, circuit.param_shapes)
    assert resumed.data == fewer.fingerprint()
    with pytest.raises(InputError, match=f"another data set \\(fingerprint {fewer.fingerprint()}, this one's"):
        asyncio.run(train(ReferenceEngine(circuit), circuit, other, schedule, resumed))
    more = moons.Points(moons_points.X[:30], moons_points.y[:30])  # its default --batch is 30, not 20
    with pytest.raises(InputError, match=f"another data set \\(fingerprint {fewer.fingerprint()}, this one's"):
        asyncio.run(
            train(ReferenceEngine(mlp.build(30)), mlp.build(30), more, Schedule(steps=2, batch=30, seed=3), resumed)
        )


def test_replicas_past_the_gate_limit_and_batches_past_a_frame_are_refused_by_name() -> None:
    assert len(mlp.build(1000, replicas=831).gates) <= MAX_TENSOR_GATES
    with pytest.raises(InputError, match=r"--replicas 832: 10,001 gates, more than the 10,000 .* at most 831"):
        mlp.build(1000, replicas=832)
    tensor_deploy.check_frames(mlp.build(8192))  # 16 x 8,192 numbers: one frame's worth
    with pytest.raises(DeployError, match=r"gate mm1: its output \(16, 8193\) is 131,088 numbers"):
        tensor_deploy.check_frames(mlp.build(8193))
    assert mlp.fewest_replicas(8193) == 2
    tensor_deploy.check_frames(mlp.build(8193, replicas=2))


def test_training_placements() -> None:
    circuit = mlp.build(40, replicas=2)
    by_replica = tensor_deploy.place_tensor(circuit, ["a", "b"], "by-replica")
    assert (by_replica["W1"], by_replica["loss"], by_replica["r0.mm1"], by_replica["r1.hinge"]) == ("a", "a", "a", "b")
    by_layer = tensor_deploy.place_tensor(circuit, ["a", "b"], "by-layer")
    assert (by_layer["W1"], by_layer["r0.X"], by_layer["loss"]) == ("a", "a", "b")
    assert set(tensor_deploy.place_tensor(circuit, ["a", "b", "c"], "round-robin").values()) == {"a", "b", "c"}
    with pytest.raises(DeployError, match="placement 'sideways'"):
        tensor_deploy.place_tensor(circuit, ["a"], "sideways")


def test_data_files_are_checked_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("x1,x2,label\n0.5,1.0,1\n0.25,oops,-1\n")
    with pytest.raises(InputError, match=re.escape("line 3: '0.25,oops,-1' has a field that is not a number")):
        moons.load(path)
    path.write_text("x1,x2,label\n0.5,1.0,0\n")
    with pytest.raises(InputError, match="line 2: the label must be -1 or 1, not '0'"):
        moons.load(path)
    path.write_text("a,b\n")
    with pytest.raises(InputError, match="line 1 must be the header x1,x2,label, not 'a,b'"):
        moons.load(path)
    path.write_bytes("\ufeffx1,x2,label\n0.5,1.0,1\n".encode())  # a spreadsheet's byte-order mark
    assert moons.load(path).y.tolist() == [1.0]
    path.write_text("x1,x2,label\n0.5,1.0,1\n\n-0.5,2.0,-1\n\n")  # blank lines (an editor's last one) are no points
    assert moons.load(path).y.tolist() == [1.0, -1.0]
    path.write_text("x1,x2,label\n0.5,1.0,1\n0.5," + "2" * 200_000 + ",1\n")  # past the csv module's field limit
    with pytest.raises(InputError, match=re.escape("line 3: not a line of a CSV file (field larger than field")):
        moons.load(path)
    path.write_text("x1,x2,label\n0.5,1.0,1\n\n0.5,2.0\n")  # the others keep their line numbers
    with pytest.raises(InputError, match="line 4: expected x1,x2,label, got 2 field"):
        moons.load(path)
    path.write_bytes(b"PK\x03\x04\xfb\x00")  # a checkpoint, a zip: not text
    with pytest.raises(InputError, match=r"points.csv: not a CSV text file \(byte 4 is not UTF-8\)"):
        moons.load(path)
