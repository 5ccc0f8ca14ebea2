"""The tensor ops: numpy arrays in, arrays out, each op a forward and its local gradients.

The array twin of gates/ops.py, read the same way. A tensor gate cannot hand out d(out)/d(in)
as a number, so `grads` takes the gradient that arrived at the output (`dout`) and returns
the gradient for each input, as CS231n's matrix-multiply gate does: for D = W X,
dW = dD Xᵀ and dX = Wᵀ dD. `shape` checks the input shapes when a circuit is compiled and
gives the output's shape, so a wrong wiring fails before anything runs.

Where numpy broadcasts an input (a bias of shape (16, 1) added to (16, 100)), its gradient is
summed over the broadcast axes: a value used by many columns gets the sum of their gradients,
the notes' "gradients add up at forks".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Shape = tuple[int, ...]
Forward = Callable[..., Array]
"""forward(*inputs, p=param) -> out"""
Grads = Callable[..., tuple[Array, ...]]
"""grads(*inputs, out, dout, p=param) -> one gradient per input, each of its input's shape"""
ShapeRule = Callable[[tuple[Shape, ...], float | None], Shape]


class ShapeError(ValueError):
    """Inputs whose shapes the op cannot combine; the message names both shapes."""


class DomainError(ArithmeticError):
    """An op produced a value that is not a finite real number (overflow, log(0), a bad label)."""


@dataclass(frozen=True)
class TensorOp:
    """One kind of tensor gate: its name, the symbol a drawing shows, its arity and its math."""

    name: str
    symbol: str
    arity: int
    forward: Forward
    grads: Grads
    shape: ShapeRule
    takes_param: bool = False
    doc: str = ""


# -- shape rules ----------------------------------------------------------------------------


def _same(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    return shapes[0]


def _scalar(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    return ()


def _broadcast(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    a, b = shapes
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ShapeError(f"shapes {a} and {b} do not broadcast together") from None


def _matmul(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    a, b = shapes
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"matmul takes two matrices, got shapes {a} and {b}")
    if a[1] != b[0]:
        raise ShapeError(f"inner dimensions differ: {a} @ {b} ({a[1]} != {b[0]})")
    return (a[0], b[1])


def _pairwise_same(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    a, b = shapes
    if a != b:
        raise ShapeError(f"scores {a} and labels {b} must have the same shape")
    return ()


def _classes(shapes: tuple[Shape, ...], p: float | None) -> Shape:
    scores, labels = shapes
    if len(scores) != 2 or labels not in ((scores[1],), (1, scores[1])):
        raise ShapeError(f"scores {scores} must be (classes, N) and labels (N,) or (1, N); labels are {labels}")
    return ()


# -- helpers --------------------------------------------------------------------------------


def unbroadcast(grad: Array, shape: Shape) -> Array:
    """Sum `grad` over the axes numpy broadcast to reach it from `shape`."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _param(p: float | None) -> float:
    assert p is not None, "validated circuits give every parametrised op its parameter"
    return p


def _sigmoid(x: Array) -> Array:
    # exp of a non-positive number only, so that neither branch can overflow
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _hinge_margins(s: Array, y: Array) -> Array:
    # written as micrograd's demo writes it: 1 + -y*score
    return 1.0 + -y * s


def _softmax(scores: Array) -> Array:
    shifted = scores - scores.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    out: Array = e / e.sum(axis=0, keepdims=True)
    return out


def _label_index(scores: Array, labels: Array) -> npt.NDArray[np.intp]:
    flat = labels.reshape(-1)
    index = flat.astype(np.intp)
    if not np.array_equal(index, flat) or index.min(initial=0) < 0 or index.max(initial=0) >= scores.shape[0]:
        raise DomainError(f"softmax_ce labels must be class indices 0..{scores.shape[0] - 1}")
    return index


def _softmax_ce(scores: Array, labels: Array, p: float | None) -> Array:
    probs = _softmax(scores)
    picked = probs[_label_index(scores, labels), np.arange(scores.shape[1])]
    return np.asarray(-np.log(picked).sum() * _param(p))


def _softmax_ce_grads(scores: Array, labels: Array, out: Array, dout: Array, p: float | None) -> tuple[Array, Array]:
    delta = _softmax(scores)
    delta[_label_index(scores, labels), np.arange(scores.shape[1])] -= 1.0
    return delta * (_param(p) * dout), np.zeros_like(labels)


def _ops() -> list[TensorOp]:
    return [
        # CS231n's matrix-multiply gate: D = W X, dW = dD Xᵀ, dX = Wᵀ dD
        TensorOp(
            "matmul",
            "@",
            2,
            lambda w, x, p=None: w @ x,
            lambda w, x, out, dout, p=None: (dout @ x.T, w.T @ dout),
            _matmul,
            doc="a @ b of matrices (m, k) and (k, n)",
        ),
        TensorOp(
            "add",
            "+",
            2,
            lambda a, b, p=None: a + b,
            lambda a, b, out, dout, p=None: (unbroadcast(dout, a.shape), unbroadcast(dout, b.shape)),
            _broadcast,
            doc="elementwise, broadcasting (a bias (16, 1) over (16, N))",
        ),
        TensorOp(
            "sub",
            "-",
            2,
            lambda a, b, p=None: a - b,
            lambda a, b, out, dout, p=None: (unbroadcast(dout, a.shape), unbroadcast(-dout, b.shape)),
            _broadcast,
            doc="elementwise, broadcasting",
        ),
        TensorOp(
            "mul",
            "*",
            2,
            lambda a, b, p=None: a * b,
            lambda a, b, out, dout, p=None: (unbroadcast(b * dout, a.shape), unbroadcast(a * dout, b.shape)),
            _broadcast,
            doc="elementwise, broadcasting",
        ),
        TensorOp(
            "relu",
            "relu",
            1,
            lambda x, p=None: np.maximum(x, 0.0),
            lambda x, out, dout, p=None: ((out > 0) * dout,),
            _same,
            doc="max(x, 0); the gradient passes where the output is positive",
        ),
        TensorOp(
            "tanh",
            "tanh",
            1,
            lambda x, p=None: np.tanh(x),
            lambda x, out, dout, p=None: ((1 - out * out) * dout,),
            _same,
        ),
        TensorOp(
            "sigmoid",
            "sigmoid",
            1,
            lambda x, p=None: _sigmoid(x),
            lambda x, out, dout, p=None: ((1 - out) * out * dout,),
            _same,
        ),
        TensorOp(
            "sum",
            "Σ",
            1,
            lambda x, p=None: np.asarray(x.sum()),
            lambda x, out, dout, p=None: (np.broadcast_to(dout, x.shape).copy(),),
            _scalar,
        ),
        TensorOp(
            "mean",
            "mean",
            1,
            lambda x, p=None: np.asarray(x.sum() / x.size),
            lambda x, out, dout, p=None: (np.full(x.shape, 1.0 / x.size) * dout,),
            _scalar,
        ),
        TensorOp(
            "hinge",
            "hinge",
            2,
            lambda s, y, p=None: np.asarray(np.maximum(_hinge_margins(s, y), 0.0).sum() * _param(p)),
            lambda s, y, out, dout, p=None: (
                (_hinge_margins(s, y) > 0) * -y * (_param(p) * dout),
                (_hinge_margins(s, y) > 0) * -s * (_param(p) * dout),
            ),
            _pairwise_same,
            takes_param=True,
            doc="the SVM hinge of micrograd's demo: p * sum(relu(1 - y*s)); p = 1/N is the mean",
        ),
        TensorOp(
            "softmax_ce",
            "CE",
            2,
            lambda s, labels, p=None: _softmax_ce(s, labels, p),
            lambda s, labels, out, dout, p=None: _softmax_ce_grads(s, labels, out, dout, p),
            _classes,
            takes_param=True,
            doc="softmax cross-entropy of scores (C, N) and class indices (N,): p * sum(-log softmax); p = 1/N",
        ),
        TensorOp(
            "l2",
            "L2",
            1,
            lambda w, p=None: np.asarray(_param(p) * (w * w).sum()),
            lambda w, out, dout, p=None: (2.0 * _param(p) * w * dout,),
            _scalar,
            takes_param=True,
            doc="the L2 penalty p * sum(w*w)",
        ),
    ]


TENSOR_OPS: dict[str, TensorOp] = {op.name: op for op in _ops()}
LEAVES = ("input", "param")
"""Leaf kinds, which hold a value of a declared shape instead of computing one: an `input`
is fed by the trainer each step (data, labels), a `param` holds its tensor and learns."""


def out_shape(op: TensorOp, shapes: tuple[Shape, ...], param: float | None) -> Shape:
    """The output's shape for inputs of `shapes`, or ShapeError saying which shapes clash."""
    if len(shapes) != op.arity:
        raise ShapeError(f"{op.name} takes {op.arity} input(s), got {len(shapes)}")
    return op.shape(shapes, param)


def _finite(what: str, op: TensorOp, values: tuple[Array, ...]) -> tuple[Array, ...]:
    for value in values:
        if not np.isfinite(value).all():
            raise DomainError(f"{what} of {op.name} is not finite (overflow or an undefined value)")
    return values


def forward(op: TensorOp, inputs: tuple[Array, ...], param: float | None) -> Array:
    """The op's output as float64, or DomainError; never nan or inf."""
    with np.errstate(all="ignore"):  # non-finite results are caught below, with the op's name
        out = np.asarray(op.forward(*inputs, p=param), dtype=np.float64)
    return _finite("output", op, (out,))[0]


def input_grads(
    op: TensorOp, inputs: tuple[Array, ...], out: Array, dout: Array, param: float | None
) -> tuple[Array, ...]:
    """The gradient for each input given the output's gradient `dout`, or DomainError."""
    with np.errstate(all="ignore"):
        grads: tuple[Any, ...] = op.grads(*inputs, out, dout, p=param)
    converted = tuple(np.asarray(g, dtype=np.float64) for g in grads)
    return _finite("gradient", op, converted)
