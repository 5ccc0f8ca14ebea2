"""The compiler: structure of what it builds, and errors that name the line and column."""

from __future__ import annotations

import ast
import concurrent.futures
import sys

import pytest

from orchestrator import compiler
from orchestrator.compiler import compile_program, compile_source
from orchestrator.errors import CompileError
from orchestrator.reference import evaluate


def wiring(source: str, output: str | None = None) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(g.id, g.op, g.inputs) for g in compile_source(source, output=output).gates]


def test_expression_becomes_gates() -> None:
    assert wiring("(x+y)*z") == [
        ("x", "input", ()),
        ("y", "input", ()),
        ("add_1", "add", ("x", "y")),
        ("z", "input", ()),
        ("f", "mul", ("add_1", "z")),
    ]


def test_staged_program_names_its_gates() -> None:
    circuit = compile_source("q = x + y\nf = q * z")
    assert [(g.id, g.op, g.inputs) for g in circuit.gates if g.op != "input"] == [
        ("q", "add", ("x", "y")),
        ("f", "mul", ("q", "z")),
    ]
    assert circuit.output == "f"
    assert compile_source("q = x + y; f = q * z").gates == circuit.gates


def test_a_name_read_twice_is_one_wire() -> None:
    circuit = compile_source("(x+x)+(x+x)")
    assert circuit.inputs == ["x"]
    assert circuit.consumers["x"] == 4


def test_plus_equals_updates_a_name() -> None:
    circuit = compile_source("f = x * y\nf += z")
    assert circuit.output == "f.2"
    assert evaluate(circuit, {"x": 2, "y": 3, "z": 4}).value == 10.0


def test_output_option_and_pruning() -> None:
    circuit = compile_source("q = x + y; f = q * z", output="q")
    assert circuit.output == "q"
    assert {g.id for g in circuit.gates} == {"x", "y", "z", "q"}  # z stays an input: its gradient is 0
    with pytest.raises(CompileError) as refused:  # said with no place: "line 1, column 1" meant nothing
        compile_source("q = x + y; f = q * z", output="nope")
    assert str(refused.value) == "--output 'nope' is not a name of this program (its names: q, f)"


def test_an_assignment_the_output_never_reads_is_left_out_with_a_warning() -> None:
    shadowed = compile_program("q = x + y; f = q * z; q = 2*q")  # the last name assigned is q, not f
    assert shadowed.warnings[0] == (
        "line 1, column 12: the value given to f here is never read by the output (q); its gates are left out"
    )
    compiled = compile_program("r = w * 2\ny = x * 3")
    assert {g.id for g in compiled.circuit.gates} == {"w", "x", "const_2", "y"}
    assert compiled.warnings == (  # the output named: the student may think r is it
        "line 1, column 1: the value given to r here is never read by the output (y); its gates are left out",
        "w stays an input, with gradient 0",
    )
    overwritten = compile_program("q = x + y; f = q * z; q = x * 2; f += q")
    assert overwritten.warnings == ()  # every value given is read
    assert compile_program("q = x + y; q = z * 2").warnings == (
        "line 1, column 1: the value given to q here is never read by the output (q); its gates are left out",
        "x, y stay inputs, with gradient 0",
    )
    assert compile_program("q = x + y; f = q * z").warnings == ()
    assert compile_program("\n\nr = w * 2\nf = x * y").warnings[0].startswith("line 3, column 1:")  # blank lines count
    assert compile_program("q = x + y; f = q * z; g = f * 2", output="f").warnings == (
        "line 1, column 23: the value given to g here is never read by the output (f); its gates are left out",
    )


def test_a_name_nothing_reads_is_told_even_when_its_value_is_another_names() -> None:
    assert compile_program("a = x\nb = y * 2\nb * z").warnings == (
        "line 1, column 1: the value given to a here is never read",
        "x stays an input, with gradient 0",
    )
    assert compile_program("a = x * 3\nb = a\na * y").warnings == (
        "line 2, column 1: the value given to b here is never read",
    )
    assert compile_program("a = x; a = a * 2; a").warnings == ()  # the second assignment reads the first
    assert compile_program("f = x * y\nf += z", output="f.2").warnings == ()  # the output named by its gate id
    assert compile_program("exp = x\nf = exp(y)").warnings == (  # a call reads the function, not the name
        "line 1, column 1: the value given to exp here is never read",
        "x stays an input, with gradient 0",
    )
    assert compile_program("a = x; f = x * y", output="a").warnings == (
        "line 1, column 8: the value given to f here is never read by the output (a); its gates are left out",
        "y stays an input, with gradient 0",
    )


def test_a_final_expression_that_output_passes_over_is_told() -> None:
    assert compile_program("q = x + y; f = q * z; q * 2", output="f").warnings == (
        "line 1, column 23: the final expression is never read: the output is f; its gates are left out",
    )
    assert compile_program("q = x + y\nf = q * z\nexp(w)", output="f").warnings == (
        "line 3, column 1: the final expression is never read: the output is f; its gates are left out",
        "w stays an input, with gradient 0",
    )
    assert compile_program("q = x + y\nf = q * z\nq", output="f").warnings == (  # q's gate stays: f reads it
        "line 3, column 1: the final expression is never read: the output is f",
    )
    assert compile_program("q = x + y; q * z", output="f").circuit.output == "f"  # the expression is the output
    assert compile_program("q = x + y; q * z", output="f").warnings == ()


def test_one_over_x_is_the_inverse_gate_and_constants_are_shared() -> None:
    ops = [g.op for g in compile_source("1/(1+exp(-(w*x)))").gates]
    assert "inv" in ops
    assert "div" not in ops
    consts = [g for g in compile_source("2*x + 2*y + x**2").gates if g.op == "const"]
    assert [g.param for g in consts] == [2.0]


def test_negative_literals_and_exponents() -> None:
    circuit = compile_source("-3 * x ** -2")
    assert [(g.op, g.param) for g in circuit.gates if g.param is not None] == [("const", -3.0), ("pow", -2.0)]


def test_a_long_chain_of_signs_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sign of a chain asks whether the chain is a number: each walked to its end, 5,000
    signs over a name took 14 s to compile (and, in `serve`, held up every other compile)."""
    looked_at: list[ast.expr] = []
    literal = compiler._literal

    def counted(node: ast.expr) -> float | None:
        looked_at.append(node)
        return literal(node)

    monkeypatch.setattr(compiler, "_literal", counted)
    circuit = compile_source("-" * 2999 + "x")
    assert [g.op for g in circuit.gates].count("neg") == 2999
    assert evaluate(circuit, {"x": 2.0}).value == -2.0
    assert len(looked_at) == 1  # the chain's end, once
    assert compile_source("-" * 2999 + "2").gates[0].param == -2.0  # a number with its signs: one constant


def test_max_min_fold_many_arguments() -> None:
    assert evaluate(compile_source("max(x, y, z)"), {"x": 1, "y": 5, "z": 2}).grads == {"x": 0.0, "y": 1.0, "z": 0.0}


@pytest.mark.parametrize(
    ("source", "line", "column", "says"),
    [
        ("exp(x, y)", 1, 1, "exp() takes 1 argument(s), got 2"),
        ("max(x)", 1, 1, "at least 2 arguments"),
        ("foo(x)", 1, 1, "unknown function 'foo'"),
        ("q = x\nf = q * w + bad(3)", 2, 13, "unknown function 'bad'"),
        ("f = q * z\nq = x + y", 1, 5, "'q' is read before it is assigned (on line 2)"),
        ("x ** y", 1, 6, "exponent of ** must be a constant"),
        ("x @ y", 1, 3, "unsupported operator '@'"),
        ("x % y", 1, 3, "unsupported operator '%'"),
        ("x^2", 1, 2, "unsupported operator '^'"),  # the operator's column, not its left operand's
        ("(x + y) ^ z", 1, 9, "unsupported operator '^'"),
        ("q = x\nf = (q  # a comment\n  ) | y", 3, 5, "unsupported operator '|'"),
        ("exp(x) + x ^ 2  # é", 1, 12, "unsupported operator '^'"),
        ("a \\\n % b", 2, 2, "unsupported operator '%'"),  # after a line continuation
        ("# a\u2028b\nz = a % b\nz", 2, 7, "unsupported operator '%'"),  # U+2028 ends no line for the parser
        ("import os", 1, 1, "unsupported statement: Import"),
        ("__import__('os').system('true')", 1, 1, "only plain function calls"),
        ("x.real", 1, 1, "unsupported syntax: an attribute (a.b); use numbers, names, + - * / **, and the functions"),
        ("~x", 1, 1, "unsupported syntax: ~ or not; use"),  # it said "UnaryOp", the parser's name
        ("x if y else z", 1, 1, "unsupported syntax: a conditional (a if c else b)"),
        ("f = x < y", 1, 5, "unsupported syntax: a comparison (<, ==, ...)"),
        ("'text'", 1, 1, "only numbers"),
        ("True + x", 1, 1, "only numbers"),
        ("(x + y", 1, 1, "syntax error"),
        ("f += x", 1, 1, "updated before it is assigned"),
        ("a, b = x, y", 1, 1, "exactly one plain name"),
        ("x\ny", 1, 1, "bare expression may only be the last"),
        ("exp", 1, 1, "'exp' is a function"),
        ("1e400 * x", 1, 1, "too large"),
        ("exp(x=1)", 1, 1, "plain positional arguments"),
        ("", 1, 1, "nothing to compile"),
        ("orchestrator", 1, 1, "name 'orchestrator' is taken: it names the orchestrator in messages"),
        ("q = x\nf = broker * q", 2, 5, "name 'broker' is taken: it names the broker in messages"),
    ],
)
def test_errors_name_line_column_and_reason(source: str, line: int, column: int, says: str) -> None:
    with pytest.raises(CompileError) as caught:
        compile_source(source)
    assert says in caught.value.reason
    assert (caught.value.line, caught.value.column) == (line, column)


@pytest.mark.parametrize(
    ("source", "column", "reason"),
    [
        ("2x + y", 1, "syntax error: invalid decimal literal; write 2*x to multiply"),
        ("y + 3.5x", 7, "syntax error: invalid decimal literal; write 3.5*x to multiply"),
        ("x2 + 3y", 6, "syntax error: invalid decimal literal; write 3*y to multiply"),
        (
            "(x+y)z",
            6,
            "syntax error: invalid syntax; two values side by side: write * between them to multiply,"
            " or name(...) to call a function",
        ),
        ("q = x + y, f = q * z", 1, "syntax error: invalid syntax; separate assignments with ';' or a new line"),
        (
            "f(x) = x*x",
            1,
            "syntax error: cannot assign to function call here; a function cannot be defined: assign a name,"
            " like f = x * x",
        ),
        (
            "x + y = 3",
            1,
            "syntax error: cannot assign to expression here; only a name can be assigned: name = expression",
        ),
        ("x = = 1", 5, "syntax error: invalid syntax"),
        ("2e-3x", 4, "syntax error: invalid decimal literal; write 2e-3*x to multiply"),  # the whole number
        (".5x + 1_000y", 2, "syntax error: invalid decimal literal; write .5*x to multiply"),
        ("f = x and", 10, "syntax error: invalid syntax"),  # nothing after: no values side by side
        ("q = max(x, y); f = q +* z", 23, "syntax error: invalid syntax"),  # separated: the comma is max's
    ],
)
def test_a_syntax_error_gives_gatemesh_advice_not_pythons(source: str, column: int, reason: str) -> None:
    """CPython suggests '==' and ':=', which gatemesh does not take; a student's usual slips
    (2x, (x+y)z, commas between assignments) get what to write instead."""
    with pytest.raises(CompileError) as caught:
        compile_source(source)
    assert (caught.value.reason, caught.value.line, caught.value.column) == (reason, 1, column)


def test_unknown_output_name() -> None:
    with pytest.raises(CompileError, match="output 'w' is not a name"):
        compile_source("f = x * y", output="w")


def test_deep_expressions_compile_or_fail_clearly() -> None:
    deep = "+".join(["x"] * 20_000)
    circuit = compile_source(deep)
    assert evaluate(circuit, {"x": 1.0}).grads == {"x": 20_000.0}
    nested = "-(" * 90 + "x" + ")" * 90
    assert evaluate(compile_source(nested), {"x": 2.0}).value == 2.0
    with pytest.raises(CompileError, match="nested too deeply"):
        compile_source("+".join(["x"] * 490_000))
    with pytest.raises(CompileError, match="too many nested parentheses"):
        compile_source("(" * 500 + "x" + ")" * 500)


def test_long_programs_are_flat() -> None:
    program = "\n".join(["a0 = x"] + [f"a{i} = a{i - 1} * 1.0001 + x" for i in range(1, 2000)])
    circuit = compile_source(program)
    assert circuit.critical_path() > 2000
    assert evaluate(circuit, {"x": 0.5}).grads["x"] > 0


def test_source_size_limit() -> None:
    with pytest.raises(CompileError, match="limit"):
        compile_source("x" * 2_000_000)


def test_compiles_on_many_threads_leave_the_recursion_limit_as_it_was() -> None:
    """Each compile raises the process's recursion limit for its parse and restores it after:
    two at once (the web page compiles off its event loop) left it raised for good."""
    before = sys.getrecursionlimit()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        circuits = list(pool.map(lambda i: compile_source(" + ".join(f"x*{i + j}" for j in range(50))), range(40)))
    assert len({len(c.gates) for c in circuits}) == 1
    assert sys.getrecursionlimit() == before
