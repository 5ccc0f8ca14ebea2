"""Tensor gates and parameters driven directly, without a broker: once per run, once per step."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gates.frame import MAX_ELEMENTS, FrameHeader, decode, encode
from gates.param import ParamCore
from gates.protocol import ErrorCode, Release, topic
from gates.tensor_core import Outgoing, TensorCore
from gates.tensor_ops import Array
from gates.tensor_protocol import ANY_ASSIGNMENT, TensorAssignment, TensorSpec

C = "train-test"
W = np.array([[1.0, 2.0], [3.0, 4.0]])
X = np.array([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])


def frame(kind: str, sender: str, array: Array | None, *, run: str = "s0", step: int = 0, **more: object) -> bytes:
    header = FrameHeader.model_validate(
        {
            "kind": kind,
            "circuit": C,
            "sender": sender,
            "run": run,
            "step": step,
            "shape": None if array is None else array.shape,
            **more,
        }
    )
    return encode(header, array)


def matmul_gate() -> TensorCore:
    spec = TensorSpec(
        id="mm",
        op="matmul",
        inputs=("W", "X"),
        input_shapes=((2, 2), (2, 3)),
        shape=(2, 3),
        needs_grad=(True, False),
        consumers=1,
    )
    return TensorCore(spec, C)


def param(consumers: int = 2, shape: tuple[int, ...] = (2, 2)) -> ParamCore:
    return ParamCore(TensorSpec(id="W", op="param", shape=shape, consumers=consumers), C)


def decoded(sent: list[Outgoing]) -> list[tuple[str, str, Array | None, int | None, int]]:
    out: list[tuple[str, str, Array | None, int | None, int]] = []
    for name, payload in sent:
        f = decode(payload)
        out.append((name, f.header.kind, f.array, f.header.port, f.header.step))
    return out


def test_matmul_gate_forwards_once_and_sends_dw_only_where_wanted() -> None:
    gate = matmul_gate()
    assert gate.subscriptions() == [
        topic(C, "fwd", "W"),
        topic(C, "fwd", "X"),
        topic(C, "grad", "mm"),
        topic(C, "control"),
    ]
    assert gate.handle(topic(C, "fwd", "X"), frame("forward", "X", X)) == []
    (sent,) = decoded(gate.handle(topic(C, "fwd", "W"), frame("forward", "W", W)))
    assert sent[0] == topic(C, "fwd", "mm")
    assert sent[2] is not None
    assert sent[2].tolist() == (W @ X).tolist()
    assert gate.handle(topic(C, "fwd", "W"), frame("forward", "W", W)) == []  # a duplicate
    dd = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    back = decoded(gate.handle(topic(C, "grad", "mm"), frame("backward", "loss", dd, port=0)))
    assert len(back) == 1  # X is data: no gradient for it
    name, kind, array, port, _ = back[0]
    assert (name, kind, port) == (topic(C, "grad", "W"), "backward", 0)
    assert array is not None
    assert array.tolist() == (dd @ X.T).tolist()
    assert gate.open_runs == 0
    assert gate.handle(topic(C, "grad", "mm"), frame("backward", "loss", dd, port=0)) == []  # late duplicate


def test_contributions_are_summed_in_key_order_whatever_the_arrival_order() -> None:
    spec = TensorSpec(
        id="h", op="relu", inputs=("z",), input_shapes=((1, 3),), shape=(1, 3), needs_grad=(True,), consumers=3
    )
    grads = {"a": np.array([[0.1, 1e16, 0.3]]), "b": np.array([[0.2, 1.0, -0.3]]), "c": np.array([[0.3, -1e16, 0.1]])}
    results = set()
    for order in itertools.permutations(grads):
        gate = TensorCore(spec, C)
        gate.handle(topic(C, "fwd", "z"), frame("forward", "z", np.array([[1.0, 2.0, 3.0]])))
        sent: list[Outgoing] = []
        for sender in order:
            sent = gate.handle(topic(C, "grad", "h"), frame("backward", sender, grads[sender], port=0))
        (only,) = decoded(sent)
        assert only[2] is not None
        results.add(only[2].tobytes())
    assert len(results) == 1


def test_a_frame_of_the_wrong_shape_is_refused_by_name() -> None:
    gate = matmul_gate()
    (error,) = gate.handle(topic(C, "fwd", "X"), frame("forward", "X", np.zeros((3, 2))))
    report = json.loads(error[1])
    assert report["code"] == "bad_schema"
    assert "'X' must have shape (2, 3), its frame has (3, 2)" in report["message"]
    (error,) = gate.handle(topic(C, "fwd", "X"), b"GMF1garbage")
    assert json.loads(error[1])["code"] == "bad_schema"


def test_an_input_fed_no_array_or_another_shape_fails_its_step_with_missing_value() -> None:
    """PROTOCOL.md's error table: a tensor input with no value of its shape has none to go on with."""
    spec = TensorSpec(id="X", op="input", shape=(2, 3), consumers=1)
    for fed, got in ((np.zeros((3, 2)), "(3, 2)"), (None, "None")):
        (error,) = TensorCore(spec, C).handle(topic(C, "feed", "X"), frame("feed", "trainer", fed))
        report = json.loads(error[1])
        assert (report["code"], report["run"]) == ("missing_value", "s0")
        assert report["message"] == f"input 'X' takes shape (2, 3), was fed {got}"
    (forward,) = TensorCore(spec, C).handle(topic(C, "feed", "X"), frame("feed", "trainer", X))
    _, kind, array, _, _ = decoded([forward])[0]
    assert kind == "forward"
    assert array is not None
    assert array.tobytes() == X.tobytes()


def feed(p: ParamCore, step: int, lr: float, run: str | None = None) -> list[Outgoing]:
    return p.handle(topic(C, "feed", "W"), frame("feed", "trainer", None, run=run or f"s{step}", step=step, lr=lr))


def grad(p: ParamCore, sender: str, g: Array, step: int, run: str | None = None) -> list[Outgoing]:
    return p.handle(topic(C, "grad", "W"), frame("backward", sender, g, run=run or f"s{step}", step=step, port=0))


def test_parameter_steps_exactly_once_per_step_under_duplicates_and_reordering() -> None:
    p = param()
    (ack,) = decoded(p.handle(topic(C, "feed", "W"), frame("set", "trainer", W, run="init", step=5)))
    assert ack[:2] == (topic(C, "report", "W"), "value")
    assert ack[4] == 5
    g1, g2 = np.full((2, 2), 0.5), np.full((2, 2), -2.0)
    # reordered: a gradient before the feed; duplicated: the feed and the gradients twice
    assert grad(p, "mm.r1", g2, 5) == []
    (fwd,) = decoded(feed(p, 5, 0.1))
    assert fwd[1] == "forward"
    assert feed(p, 5, 0.1) == []
    assert grad(p, "mm.r1", g2, 5) == []
    (value,) = decoded(grad(p, "l2", g1, 5))
    assert value[1:] == ("value", value[2], None, 6)
    expected = W - 0.1 * (g1 + g2)
    assert p.value is not None
    assert p.value.tolist() == expected.tolist()
    # late copies of step 5 change nothing
    assert feed(p, 5, 0.1) == []
    assert grad(p, "l2", g1, 5) == []
    assert grad(p, "mm.r1", g2, 5) == []
    assert p.value.tolist() == expected.tolist()
    assert p.step == 6
    # a delayed duplicate of the initial set does not rewind it
    assert p.handle(topic(C, "feed", "W"), frame("set", "trainer", W, run="init", step=5)) == []
    assert p.step == 6


def test_parameter_refuses_a_step_it_is_not_at() -> None:
    p = param()
    (error,) = feed(p, 0, 1.0)
    assert json.loads(error[1])["code"] == ErrorCode.WRONG_STEP
    p.handle(topic(C, "feed", "W"), frame("set", "trainer", W, run="init", step=0))
    (error,) = feed(p, 3, 1.0)
    report = json.loads(error[1])
    assert (report["code"], report["run"]) == ("wrong_step", "s3")
    assert "was sent step 3 but is at step 0" in report["message"]


def test_release_forgets_a_step_so_it_can_run_again() -> None:
    p = param(consumers=1)
    p.handle(topic(C, "feed", "W"), frame("set", "trainer", W, run="init", step=0))
    feed(p, 0, 1.0, run="a")
    p.handle(topic(C, "control"), Release(circuit=C, sender="trainer", run="a").model_dump_json().encode())
    assert decoded(feed(p, 0, 0.5, run="b"))[0][1] == "forward"
    (value,) = decoded(grad(p, "mm", np.ones((2, 2)), 0, run="b"))
    assert value[2] is not None
    assert value[2].tolist() == (W - 0.5).tolist()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"id": "m", "op": "matmul", "inputs": ["a"], "shape": [1]}, "takes 2 input"),
        ({"id": "m", "op": "conv", "shape": [1]}, "unknown tensor op 'conv'"),
        (
            {
                "id": "h",
                "op": "hinge",
                "inputs": ["s", "y"],
                "input_shapes": [[1], [1]],
                "needs_grad": [True, False],
                "shape": [],
            },
            "needs param",
        ),
        ({"id": "W", "op": "param", "inputs": ["x"], "shape": [1]}, "has no inputs"),
    ],
)
def test_bad_specs_are_refused(spec: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TensorSpec.model_validate({"consumers": 1, **spec})


def test_a_host_tells_tensor_assignments_from_scalar_ones() -> None:
    tensor = {
        "type": "assign_tensor",
        "circuit": C,
        "sender": "trainer",
        "host": "h1",
        "incarnation": "9f3a61c2",
        "spec": {"id": "W", "op": "param", "shape": [2, 2], "consumers": 1},
    }
    spec = {"id": "f", "index": 1, "op": "mul", "inputs": ["q", "z"], "consumers": 1}
    scalar = {**tensor, "type": "assign", "spec": spec}
    assert isinstance(ANY_ASSIGNMENT.validate_python(tensor), TensorAssignment)
    assert not isinstance(ANY_ASSIGNMENT.validate_python(scalar), TensorAssignment)


def test_an_output_too_large_for_a_frame_fails_the_run_and_the_gate_lives_on() -> None:
    points = MAX_ELEMENTS // 2 + 1  # two rows of them: one number more than a frame carries
    spec = TensorSpec(
        id="mm",
        op="matmul",
        inputs=("W", "X"),
        input_shapes=((2, 1), (1, points)),
        shape=(2, points),
        needs_grad=(True, False),
        consumers=1,
    )
    gate = TensorCore(spec, C)
    assert gate.handle(topic(C, "fwd", "W"), frame("forward", "W", np.ones((2, 1)))) == []
    (error,) = gate.handle(topic(C, "fwd", "X"), frame("forward", "X", np.ones((1, points))))
    report = json.loads(error[1])
    assert (report["code"], report["run"]) == ("domain", "s0")
    assert report["message"] == f"mm: {2 * points} numbers: a frame carries at most {MAX_ELEMENTS}"
    assert gate.handle(topic(C, "fwd", "W"), frame("forward", "W", W[:, :1], run="s1")) == []  # it lives on
