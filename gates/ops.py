"""The gate ops: what each gate computes and its local gradients, one line each.

As in micrograd's engine.py, every op says in a few words how it computes its output from
its named inputs and how its output moves with each of them:

    Op("mul", "*", forward=lambda a, b: a * b, grads=lambda a, b, out: (b, a))

`forward` takes the gate's inputs in port order (then its parameter, if it takes one);
`grads` takes the same and the output, and returns d(out)/d(input) for each input. This
table is the only place a gate's math lives. The actors, the in-process reference, the
compiler (which syntax makes which op) and `--explain` (how an op is written) all read it,
so the mesh, its oracle and its narration cannot disagree about calculus.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class DomainError(ArithmeticError):
    """An op was asked for a value outside its domain (log(0), x/0, overflow to inf or nan)."""


class LeafError(TypeError):
    """A leaf's value is given (fed by the run, or its parameter); no function computes it."""


def _given(*_: float) -> float:
    raise LeafError("a leaf's value is given (fed by the run, or its parameter), never computed")


@dataclass(frozen=True)
class Op:
    """One kind of gate: its wire name, how it is written, its math, and how a program calls it."""

    name: str
    """The op's name on the wire (GateSpec.op): never changes."""
    symbol: str
    """How a formula writes it: '+', '*', 'σ', 'exp'."""
    forward: Callable[..., float] = _given
    grads: Callable[..., tuple[float, ...]] = lambda *_: ()
    infix: bool = False
    """Written between its two inputs: a * b."""
    call: str | None = None
    """The function a program calls to make this gate, like sigmoid(x); None for operators."""
    variadic: bool = False
    """A call may take more inputs than the gate: max(a, b, c) is max(max(a, b), c)."""
    takes_param: bool = False
    """A constant from the gate's spec, handed to forward and grads after the inputs."""
    leaf: bool = False
    """No inputs: the gate's value is given, not computed."""
    fed: bool = False
    """A leaf whose value each run feeds (an input), not its parameter (a constant)."""
    arity: int = field(init=False)
    """How many inputs the gate reads, from forward's operands."""

    def __post_init__(self) -> None:
        if self.leaf:
            object.__setattr__(self, "arity", 0)
            return
        operands = _operands(self.forward)
        if _operands(self.grads) != operands + 1:
            raise TypeError(f"op {self.name}: grads must take forward's operands and then out")
        object.__setattr__(self, "arity", operands - self.takes_param)


def _operands(function: Callable[..., object]) -> int:
    return len(inspect.signature(function).parameters)


def _sigmoid(a: float) -> float:
    # Two branches so that neither exp(-a) nor exp(a) can overflow.
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


def _pow_grad(a: float, n: float, out: float) -> float:
    """d(a**n)/da = n * a**(n - 1). Past 2**53, n - 1 rounds back to n (an even number): a**(n - 1)
    is then out / a, where a**(n - 1) would have out's sign, not a's (x**1e16 at -1 gave +1e16)."""
    if n - 1 != n:
        below: float = a ** (n - 1)
        return n * below
    return n * (out / a) if a else 0.0


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        # leaves: the run feeds an input its value; a constant holds its parameter
        Op("input", "x", leaf=True, fed=True),
        Op("const", "c", leaf=True, takes_param=True),
        # arithmetic: the add gate hands its gradient on unchanged, the mul gate swaps its inputs
        Op("add", "+", infix=True, forward=lambda a, b: a + b, grads=lambda a, b, out: (1.0, 1.0)),
        Op("sub", "-", infix=True, forward=lambda a, b: a - b, grads=lambda a, b, out: (1.0, -1.0)),
        Op("mul", "*", infix=True, forward=lambda a, b: a * b, grads=lambda a, b, out: (b, a)),
        Op("div", "/", infix=True, forward=lambda a, b: a / b, grads=lambda a, b, out: (1 / b, -a / b**2)),
        Op("neg", "-", forward=lambda a: -a, grads=lambda a, out: (-1.0,)),
        Op("inv", "1/", call="inv", forward=lambda a: 1 / a, grads=lambda a, out: (-1 / a**2,)),
        Op("pow", "**", takes_param=True, forward=lambda a, n: a**n, grads=lambda a, n, out: (_pow_grad(a, n, out),)),
        # routing: the whole gradient goes to the larger (smaller) input, the first one on a tie
        Op(
            "max",
            "max",
            call="max",
            variadic=True,
            forward=lambda a, b: max(a, b),
            grads=lambda a, b, out: (1.0, 0.0) if a >= b else (0.0, 1.0),
        ),
        Op(
            "min",
            "min",
            call="min",
            variadic=True,
            forward=lambda a, b: min(a, b),
            grads=lambda a, b, out: (1.0, 0.0) if a <= b else (0.0, 1.0),
        ),
        Op("relu", "relu", call="relu", forward=lambda a: max(a, 0.0), grads=lambda a, out: (1.0 if a > 0 else 0.0,)),
        # smooth functions: the local gradient reuses the output where the notes do
        Op("exp", "exp", call="exp", forward=lambda a: math.exp(a), grads=lambda a, out: (out,)),
        Op("log", "log", call="log", forward=lambda a: math.log(a), grads=lambda a, out: (1 / a,)),
        Op("sigmoid", "σ", call="sigmoid", forward=_sigmoid, grads=lambda a, out: ((1 - out) * out,)),
        Op("tanh", "tanh", call="tanh", forward=lambda a: math.tanh(a), grads=lambda a, out: (1 - out * out,)),
    ]
}


def _operands_of(op: Op, inputs: Sequence[float], param: float | None) -> Sequence[float]:
    if not op.takes_param:
        return inputs
    if param is None:
        raise TypeError(f"op {op.name} needs its parameter (validated circuits always give it)")
    return (*inputs, param)


def _checked(
    what: str, op: Op, operands: Sequence[float], call: Callable[[], float | tuple[float, ...]]
) -> tuple[float, ...]:
    """Run one op function; turn every arithmetic failure into a DomainError that says why."""
    shown = _at(op, operands)
    try:
        result = call()
    except OverflowError as exc:
        raise DomainError(f"{what} of {shown} overflows: it is too large for a float") from exc
    except (ZeroDivisionError, ValueError) as exc:
        raise DomainError(f"{what} of {shown} is undefined ({exc})") from exc
    values = result if isinstance(result, tuple) else (result,)
    for v in values:
        if isinstance(v, complex):  # a negative number to a fractional power
            raise DomainError(f"{what} of {shown} is not a real number (a negative base, a fractional power)")
        if not math.isfinite(v):
            why = "it is too large for a float" if math.isinf(v) else "it is not a number"
            raise DomainError(f"{what} of {shown} is not a finite real number: {why}")
    return values


def _at(op: Op, operands: Sequence[float]) -> str:
    return f"{op.name}({', '.join(f'{x:g}' for x in operands)})"


def forward(op: Op, inputs: Sequence[float], param: float | None) -> float:
    """The op's output, or DomainError; never nan or inf. A leaf has none: LeafError."""
    if op.leaf:
        given = "fed by each run" if op.fed else "its parameter"
        raise LeafError(f"op {op.name} is a leaf: its value is {given}, not computed by forward")
    operands = _operands_of(op, inputs, param)
    return _checked("output", op, operands, lambda: op.forward(*operands))[0]


def local_grads(op: Op, inputs: Sequence[float], out: float, param: float | None) -> tuple[float, ...]:
    """d(out)/d(input_i) for each input, or DomainError; never nan or inf (a leaf has no inputs: ())."""
    operands = _operands_of(op, inputs, param)
    return _checked("local gradient", op, operands, lambda: op.grads(*operands, out))
