"""The gate ops: each one a pure forward function and a pure local-gradient function.

This table is the only place where a gate's math lives. The actors and the in-process
reference both read it, so the mesh and its oracle can never disagree about calculus.
A local gradient is d(out)/d(input_i) for every input, given the inputs and the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Forward = Callable[[Sequence[float], float | None], float]
LocalGrads = Callable[[Sequence[float], float, float | None], tuple[float, ...]]


class DomainError(ArithmeticError):
    """An op was asked for a value outside its domain (log(0), x/0, overflow to inf or nan)."""


@dataclass(frozen=True)
class Op:
    """One kind of gate: its arity, whether it takes a constant parameter, and its math."""

    name: str
    arity: int
    forward: Forward
    local_grads: LocalGrads
    takes_param: bool = False


def _sigmoid(x: float) -> float:
    # Two branches so that neither exp(-x) nor exp(x) can overflow.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _max_grads(x: Sequence[float]) -> tuple[float, float]:
    # The max gate routes the whole gradient to the larger input (the first one on a tie).
    return (1.0, 0.0) if x[0] >= x[1] else (0.0, 1.0)


def _min_grads(x: Sequence[float]) -> tuple[float, float]:
    return (1.0, 0.0) if x[0] <= x[1] else (0.0, 1.0)


def _param(p: float | None) -> float:
    assert p is not None, "validated circuits give every parametrised op its parameter"
    return p


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        # leaves: the gate, not the op, supplies their value: the fed value for an input
        # (passed as `p` where one is evaluated) and the parameter for a constant
        Op("input", 0, lambda x, p: _param(p), lambda x, out, p: (), takes_param=False),
        Op("const", 0, lambda x, p: _param(p), lambda x, out, p: (), takes_param=True),
        # arithmetic
        Op("add", 2, lambda x, p: x[0] + x[1], lambda x, out, p: (1.0, 1.0)),
        Op("sub", 2, lambda x, p: x[0] - x[1], lambda x, out, p: (1.0, -1.0)),
        Op("mul", 2, lambda x, p: x[0] * x[1], lambda x, out, p: (x[1], x[0])),
        Op("div", 2, lambda x, p: x[0] / x[1], lambda x, out, p: (1 / x[1], -x[0] / x[1] ** 2)),
        Op("neg", 1, lambda x, p: -x[0], lambda x, out, p: (-1.0,)),
        Op("inv", 1, lambda x, p: 1 / x[0], lambda x, out, p: (-1 / x[0] ** 2,)),
        Op(
            "pow",
            1,
            lambda x, p: x[0] ** _param(p),
            lambda x, out, p: (_param(p) * x[0] ** (_param(p) - 1),),
            takes_param=True,
        ),
        # routing
        Op("max", 2, lambda x, p: max(x[0], x[1]), lambda x, out, p: _max_grads(x)),
        Op("min", 2, lambda x, p: min(x[0], x[1]), lambda x, out, p: _min_grads(x)),
        Op("relu", 1, lambda x, p: max(x[0], 0.0), lambda x, out, p: (1.0 if x[0] > 0 else 0.0,)),
        # smooth functions: the local gradient reuses the output where the notes do
        Op("exp", 1, lambda x, p: math.exp(x[0]), lambda x, out, p: (out,)),
        Op("log", 1, lambda x, p: math.log(x[0]), lambda x, out, p: (1 / x[0],)),
        Op("sigmoid", 1, lambda x, p: _sigmoid(x[0]), lambda x, out, p: ((1 - out) * out,)),
        Op("tanh", 1, lambda x, p: math.tanh(x[0]), lambda x, out, p: (1 - out * out,)),
    ]
}


def _checked(
    what: str, op: Op, inputs: Sequence[float], call: Callable[[], float | tuple[float, ...]]
) -> tuple[float, ...]:
    """Run one op function; turn every arithmetic failure into a DomainError that says why."""
    at = f"{op.name}({', '.join(f'{x:g}' for x in inputs)})"
    try:
        result = call()
    except (ZeroDivisionError, OverflowError, ValueError) as exc:
        raise DomainError(f"{what} of {at} is undefined ({exc})") from exc
    values = result if isinstance(result, tuple) else (result,)
    for v in values:
        if isinstance(v, complex) or not math.isfinite(v):
            raise DomainError(f"{what} of {at} is not a finite real number ({v})")
    return values


def forward(op: Op, inputs: Sequence[float], param: float | None) -> float:
    """The op's output, or DomainError; never nan or inf."""
    return _checked("output", op, inputs, lambda: op.forward(inputs, param))[0]


def local_grads(op: Op, inputs: Sequence[float], out: float, param: float | None) -> tuple[float, ...]:
    """d(out)/d(input_i) for each input, or DomainError; never nan or inf."""
    return _checked("local gradient", op, inputs, lambda: op.local_grads(inputs, out, param))
