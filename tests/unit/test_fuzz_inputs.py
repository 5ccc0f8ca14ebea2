"""Fuzz the compiler and the circuit-file loader: nothing runs, every rejection is located, all is bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.circuit import MAX_FILE_BYTES, Circuit
from orchestrator.compiler import compile_source
from orchestrator.errors import CircuitError, CompileError

TOKENS = [
    "x", "y", "q", "f", "1", "2.5", "0", "1e999", "10**400", "+", "-", "*", "/", "**", "(", ")", ",", ";", "=",
    "+=", "\n", " ", "exp(", "log(", "max(", "min(", "sigmoid(", "relu(", "inv(", "pow(", "__import__(", "'a'",
    ".real", "[", "]", "lambda", ":", "if", "else", "@", "%", "//", "not ", "<", "\t", "#", "\\", "\x00", "é",
]  # fmt: skip
SLOW = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def compiles_or_is_located(source: str) -> None:
    try:
        circuit = compile_source(source)
    except CompileError as exc:
        error = exc
    else:
        assert circuit.gates  # a circuit that compiled is a valid one (the model validated it)
        return
    assert error.line is not None  # a source's error always has a place (only --output's has none)
    assert error.column is not None
    assert error.line >= 1
    assert error.column >= 1
    assert str(error).startswith(f"line {error.line}, column {error.column}: ")


@SLOW
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_token_soup_compiles_or_fails_with_a_location(source: str) -> None:
    compiles_or_is_located(source)


@SLOW
@given(st.text(max_size=200))
def test_any_text_compiles_or_fails_with_a_location(source: str) -> None:
    compiles_or_is_located(source)


def test_nothing_in_the_source_is_ever_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    attempts = [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}', 'w')\")",
        f"eval(\"open('{marker}', 'w')\")",
        f"q = open('{marker}', 'w'); f = q",
        "x.__class__.__bases__[0].__subclasses__()",
    ]
    for source in attempts:
        with pytest.raises(CompileError):
            compile_source(source)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("(" * 100_000 + "x" + ")" * 100_000, "too many nested parentheses"),
        ("-" * 200_000 + "x", "nested too deeply"),
        ("x * " + "9" * 5000, "Exceeds the limit"),
        ("1e999 * x", "number is too large"),
    ],
)
def test_deep_and_huge_sources_are_bounded(source: str, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        compile_source(source)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
gate_like = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["x", "y", "q", "f", "", "a/b", "1x"]),
        "op": st.sampled_from(["input", "add", "mul", "const", "pow", "nope"]),
    },
    optional={
        "inputs": st.lists(st.sampled_from(["x", "y", "q", "f", "zz"]), max_size=3),
        "param": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
        "extra": st.integers(),
    },
)
circuit_like = st.fixed_dictionaries(
    {"gates": st.lists(gate_like, max_size=6), "output": st.sampled_from(["x", "q", "f", "nope"])},
    optional={"name": st.text(max_size=8)},
)


def loads_or_is_named(data: Any) -> None:
    try:
        Circuit.from_data(data, source="file.json")
    except CircuitError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("file.json: invalid circuit: ")


@SLOW
@given(json_values)
def test_any_json_value_is_a_circuit_or_a_named_error(data: Any) -> None:
    loads_or_is_named(data)


@SLOW
@given(circuit_like)
def test_almost_circuits_are_circuits_or_named_errors(data: dict[str, Any]) -> None:
    loads_or_is_named(data)


@SLOW
@given(st.text(max_size=300), st.booleans())
def test_any_file_text_is_a_circuit_or_a_located_error(text: str, yaml_syntax: bool) -> None:
    try:
        Circuit.parse(text, source="file", yaml_syntax=yaml_syntax)
    except CircuitError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("file: ")


def test_deep_enormous_and_exploding_files_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(CircuitError, match="nested too deeply"):
        Circuit.parse("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CircuitError, match=r"not valid YAML|nested"):
        Circuit.parse("[" * 200_000 + "]" * 200_000, yaml_syntax=True)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used, nothing read
    with pytest.raises(CircuitError, match="larger than the"):
        Circuit.load(huge)
    # a "billion laughs" of YAML aliases: nine levels of ten references each
    lines = ["a: &a [{id: x, op: input}, {id: x, op: input}]"]
    for level in range(9):
        name, previous = f"l{level}", "a" if level == 0 else f"l{level - 1}"
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    lines += ["gates: *l8", "output: x"]
    with pytest.raises(CircuitError, match="gates"):
        Circuit.parse("\n".join(lines), yaml_syntax=True)
    assert json.loads("[]") == []
