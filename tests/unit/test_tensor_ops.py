"""Every tensor op's gradients against central finite differences; shapes; CS231n's matmul gate."""

from __future__ import annotations

import numpy as np
import pytest

from gates import tensor_ops
from gates.tensor_ops import TENSOR_OPS, Array, DomainError, ShapeError, forward, input_grads, out_shape

H = 1e-6
rng = np.random.default_rng(231)


def away_from_zero(shape: tuple[int, ...]) -> Array:
    """Uniform in +-[0.2, 1.5]: no relu or hinge kink within H of any point."""
    return np.asarray(rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape))


def labels_pm1(shape: tuple[int, ...]) -> Array:
    return rng.choice([-1.0, 1.0], size=shape)


# (op, param, input arrays, which inputs to check: labels are not differentiable)
CASES: list[tuple[str, float | None, tuple[Array, ...], tuple[int, ...]]] = [
    ("matmul", None, (away_from_zero((3, 4)), away_from_zero((4, 5))), (0, 1)),
    ("add", None, (away_from_zero((3, 5)), away_from_zero((3, 1))), (0, 1)),  # a bias over columns
    ("add", None, (away_from_zero((3, 5)), away_from_zero((5,))), (0, 1)),  # a row over rows
    ("add", None, (away_from_zero((2, 3)), away_from_zero((2, 3))), (0, 1)),
    ("sub", None, (away_from_zero((3, 5)), away_from_zero((3, 1))), (0, 1)),
    ("sub", None, (away_from_zero(()), away_from_zero((2, 2))), (0, 1)),
    ("mul", None, (away_from_zero((3, 5)), away_from_zero((1, 5))), (0, 1)),
    ("mul", None, (away_from_zero((4,)), away_from_zero((4,))), (0, 1)),
    ("relu", None, (away_from_zero((4, 6)),), (0,)),
    ("tanh", None, (away_from_zero((4, 6)),), (0,)),
    ("sigmoid", None, (away_from_zero((4, 6)) * 4,), (0,)),
    ("sum", None, (away_from_zero((3, 7)),), (0,)),
    ("mean", None, (away_from_zero((3, 7)),), (0,)),
    ("hinge", 1 / 8, (away_from_zero((1, 8)) * 3, labels_pm1((1, 8))), (0, 1)),
    ("softmax_ce", 1 / 6, (away_from_zero((4, 6)), rng.integers(0, 4, size=(6,)).astype(np.float64)), (0,)),
    ("l2", 1e-4, (away_from_zero((5, 3)),), (0,)),
]


def numeric_grad(name: str, param: float | None, inputs: tuple[Array, ...], dout: Array, index: int) -> Array:
    """d(sum(dout * out))/d(inputs[index]) by central differences, one element at a time."""
    op = TENSOR_OPS[name]
    grad = np.zeros_like(inputs[index])
    for position in np.ndindex(inputs[index].shape):
        moved = []
        for sign in (1.0, -1.0):
            shifted = [x.copy() for x in inputs]
            shifted[index][position] += sign * H
            moved.append(float((forward(op, tuple(shifted), param) * dout).sum()))
        grad[position] = (moved[0] - moved[1]) / (2 * H)
    return grad


@pytest.mark.parametrize(("name", "param", "inputs", "checked"), CASES)
def test_gradient_matches_central_differences(
    name: str, param: float | None, inputs: tuple[Array, ...], checked: tuple[int, ...]
) -> None:
    op = TENSOR_OPS[name]
    out = forward(op, inputs, param)
    assert out.shape == out_shape(op, tuple(x.shape for x in inputs), param)
    dout = rng.uniform(-2, 2, size=out.shape)
    analytic = input_grads(op, inputs, out, dout, param)
    assert [g.shape for g in analytic] == [x.shape for x in inputs]
    for index in checked:
        numeric = numeric_grad(name, param, inputs, dout, index)
        np.testing.assert_allclose(analytic[index], numeric, rtol=1e-6, atol=1e-8, err_msg=f"{name} input {index}")


def test_every_op_is_covered_by_the_gradient_check() -> None:
    assert {name for name, *_ in CASES} == set(TENSOR_OPS)


def test_matmul_is_the_cs231n_gate() -> None:
    """D = W X; with dD given, dW = dD Xᵀ and dX = Wᵀ dD, checked by hand."""
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = np.array([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])
    dd = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    out = forward(TENSOR_OPS["matmul"], (w, x), None)
    assert out.tolist() == [[21.0, 24.0, 27.0], [47.0, 54.0, 61.0]]
    dw, dx = input_grads(TENSOR_OPS["matmul"], (w, x), out, dd, None)
    assert dw.tolist() == [[5 - 7, 8 - 10], [2.5 + 12, 4 + 18]]
    assert dx.tolist() == [[1 + 1.5, 6, -1], [2 + 2, 8, -2]]


def test_bias_gradient_is_summed_over_the_broadcast_axis() -> None:
    z, b = np.zeros((2, 3)), np.zeros((2, 1))
    dout = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    dz, db = input_grads(TENSOR_OPS["add"], (z, b), z + b, dout, None)
    assert dz.tolist() == dout.tolist()
    assert db.tolist() == [[6.0], [15.0]]


def test_hinge_is_micrographs_demo_loss() -> None:
    """mean(relu(1 - y*s)) with p = 1/N: margins 1-2=-1 -> 0, 1+0.5, 1-(-1)*(-3)=-2 -> 0, 1-0.25."""
    s = np.array([[2.0, -0.5, -3.0, 0.25]])
    y = np.array([[1.0, 1.0, -1.0, 1.0]])
    out = forward(TENSOR_OPS["hinge"], (s, y), 0.25)
    assert float(out) == (0 + 1.5 + 0 + 0.75) / 4
    ds, _ = input_grads(TENSOR_OPS["hinge"], (s, y), out, np.asarray(1.0), 0.25)
    assert ds.tolist() == [[0.0, -0.25, 0.0, -0.25]]


def test_softmax_ce_of_uniform_scores_is_log_classes() -> None:
    out = forward(TENSOR_OPS["softmax_ce"], (np.zeros((4, 2)), np.array([0.0, 3.0])), 0.5)
    assert float(out) == pytest.approx(np.log(4.0), rel=1e-15)


@pytest.mark.parametrize(
    ("name", "shapes", "says"),
    [
        ("matmul", ((16, 2), (3, 100)), "inner dimensions differ: (16, 2) @ (3, 100)"),
        ("matmul", ((16,), (16, 1)), "two matrices, got shapes (16,) and (16, 1)"),
        ("add", ((16, 100), (15, 1)), "shapes (16, 100) and (15, 1) do not broadcast"),
        ("hinge", ((1, 100), (1, 99)), "scores (1, 100) and labels (1, 99)"),
        ("softmax_ce", ((3, 10), (9,)), "scores (3, 10)"),
    ],
)
def test_shape_errors_name_both_shapes(name: str, shapes: tuple[tuple[int, ...], ...], says: str) -> None:
    with pytest.raises(ShapeError, match=says.replace("(", r"\(").replace(")", r"\)")):
        out_shape(TENSOR_OPS[name], shapes, 1.0)


def test_non_finite_results_are_domain_errors() -> None:
    with pytest.raises(DomainError, match="output of mul is not finite"):
        forward(TENSOR_OPS["mul"], (np.array([1e300]), np.array([1e300])), None)
    with pytest.raises(DomainError, match=r"class indices 0\.\.2"):
        forward(TENSOR_OPS["softmax_ce"], (np.zeros((3, 2)), np.array([0.0, 2.5])), 1.0)


def test_sigmoid_is_stable_far_from_zero() -> None:
    out = forward(TENSOR_OPS["sigmoid"], (np.array([-1000.0, 0.0, 1000.0]),), None)
    assert out.tolist() == [0.0, 0.5, 1.0]


def test_unbroadcast_sums_leading_and_unit_axes() -> None:
    grad = np.ones((2, 3, 4))
    assert tensor_ops.unbroadcast(grad, (3, 1)).tolist() == [[8.0]] * 3
