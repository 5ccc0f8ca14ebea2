"""Every op's local gradient against central finite differences, its domain errors, and the table's shape."""

from __future__ import annotations

import math

import pytest

from gates import ops
from orchestrator import compiler
from orchestrator.compiler import compile_source

H = 1e-5

# (op, param, points) with points away from kinks and domain edges
CASES: list[tuple[str, float | None, list[tuple[float, ...]]]] = [
    ("add", None, [(1.5, -2.0), (0.3, 0.7)]),
    ("sub", None, [(1.5, -2.0), (-0.3, 0.7)]),
    ("mul", None, [(4.0, -3.0), (0.5, 2.5)]),
    ("div", None, [(1.0, 3.0), (-2.0, 0.5)]),
    ("neg", None, [(1.25,), (-3.0,)]),
    ("inv", None, [(2.0,), (-0.5,)]),
    ("pow", 2.0, [(3.0,), (-1.5,)]),
    ("pow", -0.5, [(4.0,), (0.25,)]),
    ("pow", 3.0, [(-2.0,)]),
    ("max", None, [(4.0, 2.0), (-1.0, 3.0)]),
    ("min", None, [(4.0, 2.0), (-1.0, 3.0)]),
    ("relu", None, [(2.0,), (-2.0,)]),
    ("exp", None, [(0.0,), (-1.5,), (2.0,)]),
    ("log", None, [(0.5,), (3.0,)]),
    ("sigmoid", None, [(0.0,), (1.0,), (-3.0,)]),
    ("tanh", None, [(0.0,), (0.7,), (-2.0,)]),
]


@pytest.mark.parametrize(("name", "param", "points"), CASES)
def test_local_gradient_matches_central_differences(
    name: str, param: float | None, points: list[tuple[float, ...]]
) -> None:
    op = ops.OPS[name]
    for point in points:
        out = ops.forward(op, point, param)
        analytic = ops.local_grads(op, point, out, param)
        assert len(analytic) == op.arity
        for i in range(op.arity):
            up = list(point)
            down = list(point)
            up[i] += H
            down[i] -= H
            numeric = (ops.forward(op, up, param) - ops.forward(op, down, param)) / (2 * H)
            assert analytic[i] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, point, i)


def test_every_op_is_covered_by_the_gradient_check() -> None:
    assert {name for name, _, _ in CASES} | {"input", "const"} == set(ops.OPS)


def test_notes_values() -> None:
    assert ops.forward(ops.OPS["sigmoid"], [1.0], None) == 0.7310585786300049
    assert ops.local_grads(ops.OPS["sigmoid"], [1.0], 0.7310585786300049, None) == (0.19661193324148185,)
    assert ops.local_grads(ops.OPS["max"], [4.0, 2.0], 4.0, None) == (1.0, 0.0)
    assert ops.local_grads(ops.OPS["mul"], [4.0, -3.0], -12.0, None) == (-3.0, 4.0)


@pytest.mark.parametrize(
    ("a", "n", "expected"),
    [
        (-1.0, 1e16, -1e16),  # n * (-1)**(n - 1), n - 1 odd: x**1e16 at -1 gave +1e16
        (1.0, 1e16, 1e16),
        (-1.0, 2.0**53, -(2.0**53)),
        (-1.0, 2.0**53 - 1, 2.0**53 - 1),  # just below: n - 1 is exact, and even
        (-1.0, -1e16, 1e16),  # n * (-1)**(-1e16 - 1) = -1e16 * -1
        (0.0, 1e16, 0.0),
    ],
)
def test_pow_of_a_huge_exponent_keeps_its_gradients_sign(a: float, n: float, expected: float) -> None:
    """Past 2**53 a float n - 1 rounds back to n, which is even: a**(n - 1) took a**n's sign."""
    out = ops.forward(ops.OPS["pow"], [a], n)
    assert ops.local_grads(ops.OPS["pow"], [a], out, n) == (expected,)


def test_sigmoid_is_stable_far_from_zero() -> None:
    assert ops.forward(ops.OPS["sigmoid"], [-1000.0], None) == 0.0
    assert ops.forward(ops.OPS["sigmoid"], [1000.0], None) == 1.0


@pytest.mark.parametrize(
    ("name", "inputs", "param", "says"),
    [
        ("log", [0.0], None, "log(0)"),
        ("log", [-1.0], None, "log(-1)"),
        ("div", [1.0, 0.0], None, "div(1, 0)"),
        ("inv", [0.0], None, "inv(0)"),
        ("exp", [1000.0], None, "exp(1000)"),
        ("mul", [1e300, 1e300], None, "not a finite"),
        ("pow", [-8.0], 0.5, "output of pow(-8, 0.5) is not a real number (a negative base, a fractional power)"),
        ("pow", [0.0], -1.0, "pow(0, -1)"),
        ("pow", [10.0], 400.0, "output of pow(10, 400) overflows: it is too large for a float"),
    ],
)
def test_domain_errors_are_reported_not_nan(name: str, inputs: list[float], param: float | None, says: str) -> None:
    with pytest.raises(ops.DomainError, match=r"\b" + says.replace("(", r"\(").replace(")", r"\)")):
        ops.forward(ops.OPS[name], inputs, param)


def test_local_gradient_domain_error() -> None:
    # sqrt is differentiable everywhere but at 0
    out = ops.forward(ops.OPS["pow"], [0.0], 0.5)
    assert out == 0.0
    with pytest.raises(ops.DomainError, match="local gradient"):
        ops.local_grads(ops.OPS["pow"], [0.0], out, 0.5)
    assert math.isfinite(ops.local_grads(ops.OPS["pow"], [4.0], 2.0, 0.5)[0])


def test_the_wire_names_and_how_each_op_is_written() -> None:
    written = {name: (op.symbol, op.call, op.arity, op.takes_param) for name, op in ops.OPS.items()}
    assert written == {
        "input": ("x", None, 0, False),
        "const": ("c", None, 0, True),
        "add": ("+", None, 2, False),
        "sub": ("-", None, 2, False),
        "mul": ("*", None, 2, False),
        "div": ("/", None, 2, False),
        "neg": ("-", None, 1, False),
        "inv": ("1/", "inv", 1, False),
        "pow": ("**", None, 1, True),
        "max": ("max", "max", 2, False),
        "min": ("min", "min", 2, False),
        "relu": ("relu", "relu", 1, False),
        "exp": ("exp", "exp", 1, False),
        "log": ("log", "log", 1, False),
        "sigmoid": ("σ", "sigmoid", 1, False),
        "tanh": ("tanh", "tanh", 1, False),
    }


def test_leaves_are_flagged_on_the_op() -> None:
    assert {name for name, op in ops.OPS.items() if op.leaf} == {"input", "const"}
    assert {name for name, op in ops.OPS.items() if op.fed} == {"input"}


@pytest.mark.parametrize(("name", "says"), [("input", "fed by each run"), ("const", "its parameter")])
def test_a_leaf_has_no_forward(name: str, says: str) -> None:
    with pytest.raises(ops.LeafError, match=f"op {name} is a leaf: its value is {says}, not computed"):
        ops.forward(ops.OPS[name], [], 3.0)
    with pytest.raises(ops.LeafError, match="never computed"):
        ops.OPS[name].forward()
    assert ops.local_grads(ops.OPS[name], [], 3.0, 3.0 if ops.OPS[name].takes_param else None) == ()


def test_grads_must_take_the_operands_of_forward_and_then_out() -> None:
    with pytest.raises(TypeError, match="op bad: grads must take forward's operands and then out"):
        ops.Op("bad", "?", forward=lambda a, b: a * b, grads=lambda a, out: (1.0,))
    assert ops.Op("ok", "?", forward=lambda a, n: a * n, grads=lambda a, n, out: (n,), takes_param=True).arity == 1


def test_a_parametrised_op_without_its_parameter_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="op pow needs its parameter"):
        ops.forward(ops.OPS["pow"], [2.0], None)


@pytest.mark.parametrize("op", [op for op in ops.OPS.values() if op.infix], ids=lambda op: op.name)
def test_the_compiler_reads_its_operators_from_the_table(op: ops.Op) -> None:
    circuit = compile_source(f"x {op.symbol} y")
    assert circuit.by_id[circuit.output].op == op.name


@pytest.mark.parametrize("op", [op for op in ops.OPS.values() if op.call], ids=lambda op: op.name)
def test_the_compiler_reads_its_functions_from_the_table(op: ops.Op) -> None:
    args = ", ".join(["x", "y", "z"][: op.arity + op.variadic])
    circuit = compile_source(f"{op.call}({args})")
    assert circuit.by_id[circuit.output].op == op.name
    assert len([g for g in circuit.gates if g.op == op.name]) == 1 + op.variadic  # max(x, y, z) folds


def test_the_compiler_accepts_no_other_function_or_operator() -> None:
    assert set(compiler.FUNCTIONS) == {"inv", "max", "min", "relu", "exp", "log", "sigmoid", "tanh"}
    assert set(compiler.INFIX) == {"+", "-", "*", "/"}
