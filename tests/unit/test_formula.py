"""A picture's caption writes its circuit out: as one expression, or in the stages the program named."""

from __future__ import annotations

import re

import pytest

from orchestrator.circuit import Circuit, GateDef
from orchestrator.compiler import compile_source
from orchestrator.examples import EXAMPLES
from viz.caption import formula


@pytest.mark.parametrize(
    ("source", "written"),
    [
        ("(x+y)*z", "f = (x + y) * z"),
        ("sigmoid(w0*x0 + w1*x1 + w2)", "f = sigmoid(w0 * x0 + w1 * x1 + w2)"),  # no brackets the order needs not
        ("1/(1 + exp(-(w0*x0 + w2)))", "f = 1 / (1 + exp(-(w0 * x0 + w2)))"),  # the compiler's inv, as typed
        ("x - (y - z) + (x*y)**2 - -x**2", "f = x - (y - z) + (x * y)**2 - -x**2"),
        ("q = x + y; f = q * z", "q = x + y; f = q * z"),
        ("a = x*y; b = a + x; c = a*b", "a = x * y; b = a + x; c = a * b"),  # not c = (x * y) * ((x * y) + x)
        ("a = x*y; c = sigmoid(a) * 2 + a", "a = x * y; c = sigmoid(a) * 2 + a"),
        ("a = x*y; a = a*a; a", "a = x * y; a = a * a"),  # as typed: not the compiler's a.2
        ("x", "f = x"),  # the page's title read "x = x"
        ("2", "f = 2"),  # and "const_1 = 2"
        ("y = 2; y", "f = 2"),
    ],
)
def test_a_formula_keeps_the_stages_a_program_named(source: str, written: str) -> None:
    assert formula(compile_source(source)) == written


def test_a_long_formula_is_cut_at_a_space_and_gives_the_circuits_size() -> None:
    circuit = compile_source(" + ".join(f"w{i} * x{i}" for i in range(12)))
    written = formula(circuit)
    assert written == "f = w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4 + w5 * x5 + w6 \u2026 (47 gates)"
    assert len(written) <= 80


def test_a_long_sum_starts_at_its_start_and_names_no_gate_of_the_compilers() -> None:
    """The title of a 40-product sum read "f = add_53 + mul_54 + a28 * b28 + ...": the middle of
    the sum, under names that appear nowhere on the page."""
    forty = compile_source(" + ".join(f"a{i} * b{i}" for i in range(40)))
    assert formula(forty) == "f = a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3 + a4 * b4 + a5 * b5 + \u2026 (159 gates)"
    deeper = formula(compile_source(" + ".join(f"a{i} * b{i}" for i in range(400))))  # 400 adds deep
    assert deeper == "f = a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3 + a4 * b4 + a5 * b5 + \u2026 (1599 gates)"
    assert not re.search(r"\b(add|mul)_\d+", deeper)
    assert formula(compile_source("x" + " * x" * 300)).startswith("f = x * x * x")
    squares = [GateDef(id="mul_0", op="input")]  # each gate read twice, 60 deep: 2**60 paths, written once
    squares += [GateDef(id=f"mul_{i}", op="mul", inputs=(f"mul_{i - 1}", f"mul_{i - 1}")) for i in range(1, 61)]
    assert formula(Circuit(gates=tuple(squares), output="mul_60")).startswith("mul_60 = mul_0 * mul_0 * (mul_0 * ")


def test_a_long_program_shows_its_last_stage_and_how_many_came_before() -> None:
    """The staged example read "f = the circuit (17 gates)": nothing of what it computes."""
    circuit = compile_source(EXAMPLES[5].source)
    assert formula(circuit) == "f = num * invden, after 7 named stages (17 gates)"


def test_a_circuit_files_own_dotted_ids_stay_as_they_are() -> None:
    """`h.1` and `h.2` in a circuit file are two gates: the caption read both as h."""
    circuit = Circuit.parse(
        '{"gates": [{"id": "x.1", "op": "input"}, {"id": "x.2", "op": "input"},'
        ' {"id": "h.1", "op": "mul", "inputs": ["x.1", "x.2"]}, {"id": "h.2", "op": "add", "inputs": ["x.1", "x.2"]},'
        ' {"id": "f", "op": "mul", "inputs": ["h.1", "h.2"]}], "output": "f"}'
    )
    assert formula(circuit) == "h.1 = x.1 * x.2; h.2 = x.1 + x.2; f = h.1 * h.2"


def _shape(circuit: Circuit, gate: str) -> object:
    """A gate's computation as a tree of ops, params and inputs' names: what it computes, not how it is named."""
    g = circuit.by_id[gate]
    if g.op == "input":
        return g.id
    return (g.op, g.param, tuple(_shape(circuit, source) for source in g.inputs))


@pytest.mark.parametrize(
    "source",
    [
        "x * (y * z) + (x + (y + z))",  # equal values either way: the trees tell them apart
        "x - (y - z)",
        "x / (y / z) * w",
        "-(x + y) ** 2 + (-x) ** 3 - -x ** 2",
        "1 / (x * y) + 1 / -x",
        "(x - y) * -(z - w) / (x + 2) ** -1",
        "max(x - y, -z) * tanh(x / y - z)",
    ],
)
def test_a_formula_computes_what_its_circuit_does(source: str) -> None:
    """Brackets left out where the order of operations makes them unneeded, never where it does:
    the formula, compiled again, is the same circuit (the same gates in the same tree)."""
    circuit = compile_source(source)
    again = compile_source(formula(circuit).removeprefix("f = "))
    assert _shape(again, again.output) == _shape(circuit, circuit.output)
