"""Circuit validation and files: every rejection names the gate and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.circuit import Circuit
from orchestrator.compiler import compile_source
from orchestrator.errors import CircuitError


def gates(*defs: dict[str, Any], output: str = "f") -> dict[str, Any]:
    return {"gates": list(defs), "output": output}


X = {"id": "x", "op": "input"}
Y = {"id": "y", "op": "input"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (gates(X, {"id": "f", "op": "mull", "inputs": ["x", "x"]}), "gates[1] (id 'f'): unknown op 'mull'"),
        (gates(X, {"id": "f", "op": "mul", "inputs": ["x"]}), "gates[1] (id 'f'): op 'mul' takes 2 input(s), got 1"),
        (gates(X, {"id": "f", "op": "mul", "inputs": ["x", "w"]}), "input 'w' is not a gate"),
        (gates(X, X, output="x"), "c.json: invalid circuit: gate ids must be unique; repeated: 'x'"),  # no "circuit:"
        (gates(X, {"id": "f", "op": "pow", "inputs": ["x"]}), "op 'pow' needs a numeric 'param'"),
        (gates(X, {"id": "f", "op": "neg", "inputs": ["x"], "param": 2}), "op 'neg' takes no 'param'"),
        (gates(X, output="nope"), "output 'nope' is not a gate"),
        (
            gates(X, {"id": "orchestrator", "op": "neg", "inputs": ["x"]}, output="orchestrator"),
            "gates[1] (id 'orchestrator'): 'orchestrator' names the orchestrator in messages and traces",
        ),
        (gates({"id": "broker", "op": "input"}, output="broker"), "gates[0] (id 'broker'): 'broker' names the broker"),
        (
            gates(
                X, {"id": "a", "op": "add", "inputs": ["x", "b"]}, {"id": "b", "op": "neg", "inputs": ["a"]}, output="a"
            ),
            "cycle: a -> b -> a",
        ),
        (
            gates({"id": "a/b", "op": "input"}, output="a/b"),
            "gates[0] (id 'a/b').id: 'a/b' is not a name: give a letter or '_' followed by letters",
        ),
        (
            gates(X, {"id": "f", "op": "neg", "inputs": ["x"], "colour": "red"}),
            "gates[1] (id 'f').colour: not a field (a gate has id, op and, as its op needs, inputs and param)",
        ),
        (
            {"circuit": "c", "gates": [{"op": "input"}, {"op": "input"}]},
            "invalid circuit: gates[0].id: missing; gates[1].id: missing; output: missing; circuit: not a field "
            "(a gate has id, op and, as its op needs, inputs and param; a circuit has gates, output and, optionally, "
            "name)",
        ),
        (gates(X, {"id": "f", "op": "const", "param": "inf"}), "gates[1] (id 'f').param"),
        ({"gates": [], "output": "f"}, "gates: give at least one gate"),
        ([1, 2], "a circuit is one mapping (gates, output, a name); this file holds a list"),
        (7, "this file holds only 7"),
    ],
)
def test_invalid_circuits_are_named(data: Any, says: str) -> None:
    with pytest.raises(CircuitError) as caught:
        Circuit.from_data(data, source="c.json")
    assert says in str(caught.value)
    assert str(caught.value).startswith("c.json: invalid circuit")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    circuit = compile_source("sigmoid(w0*x0 + w1*x1 + w2) ** 2", name="neuron")
    path = tmp_path / f"c{suffix}"
    circuit.dump(path)
    assert Circuit.load(path) == circuit


@pytest.mark.parametrize(
    ("text", "suffix"), [("", ".json"), ("  \n", ".json"), ("", ".yaml"), ("# a comment only\n", ".yaml")]
)
def test_an_empty_file_is_called_empty(tmp_path: Path, text: str, suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(CircuitError) as caught:
        Circuit.load(path)
    assert (
        str(caught.value)
        == f"{path}: invalid circuit: a circuit is one mapping (gates, output, a name); this file is empty"
    )


def test_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"gates": [\n  {"id": "x" "op": "input"}]}')
    with pytest.raises(CircuitError, match=r"broken.json: line 2, column 14: not valid JSON"):
        Circuit.load(broken)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("gates: [\n  - id: x\n")
    with pytest.raises(CircuitError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        Circuit.load(bad_yaml)
    with pytest.raises(CircuitError, match="cannot read"):
        Circuit.load(tmp_path / "missing.json")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(CircuitError, match="not valid YAML"):
        Circuit.load(unsafe)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CircuitError, match="deep"):
        Circuit.load(deep)
    deep_yaml = tmp_path / "deep.yaml"  # it said "maximum recursion depth exceeded while calling a Python object"
    deep_yaml.write_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(CircuitError, match=r"deep\.yaml: YAML nested too deeply$"):
        Circuit.load(deep_yaml)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_number_too_long_to_read_is_refused_with_where_it_is(tmp_path: Path, suffix: str) -> None:
    """Python reads at most 4,300 digits of a whole number; json and yaml then raise a bare
    ValueError, which came out as a traceback."""
    gates = '[{"id": "x", "op": "input"}, {"id": "f", "op": "pow", "inputs": ["x"], "param": ' + "9" * 5000 + "}]"
    said = _refusal(tmp_path / f"big{suffix}", '{"gates": ' + gates + ', "output": "f"}')
    assert said == f"{tmp_path / f'big{suffix}'}: line 1, column 91: a number of 5,000 digits is too long to read"


def _refusal(path: Path, text: str) -> str:
    """The CircuitError that loading `text` as the file `path` raises."""
    path.write_text(text)
    with pytest.raises(CircuitError) as caught:
        Circuit.load(path)
    return str(caught.value)


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path: Path) -> None:
    """JSON and YAML parsers keep a repeated key's last value: the first would vanish unsaid."""
    said = _refusal(tmp_path / "twice.json", '{"gates": [{"id": "x", "op": "input"}], "output": "x", "output": "y"}')
    assert re.search(r"^.*twice\.json: not valid: the key 'output' appears twice in one object$", said)
    said = _refusal(tmp_path / "twice.yaml", "gates:\n  - {id: x, op: input}\noutput: x\ngates: []\n")
    assert re.search(r"twice\.yaml: line 4, column 1: not valid YAML: the key 'gates' appears twice", said)
    once = tmp_path / "once.yaml"
    once.write_text("gates:\n  - {id: x, op: input}\noutput: x\n")
    assert Circuit.load(once).output == "x"


_GATES = "name: qf\ngates:\n  - id: x\n    op: input\n"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            _GATES + "  - id: q\n    op: add\n     inputs: [x, x]\noutput: q\n",
            "line 7, column 12: not valid YAML: a ':' where no key can start (a line indented deeper than"
            " the key above it, a key above with no space after its ':', or a value holding ': ' that needs quotes)",
        ),
        (
            _GATES + "  - id: q\n  op: add\n    inputs: [x, x]\noutput: q\n",
            "line 6, column 3: not valid YAML: this line's indentation does not fit the lines above it (the"
            " keys of one mapping start in one column, and every item of a list starts with '-' in that list's column)",
        ),
        (
            _GATES.replace("    op", "\top"),
            "line 4, column 1: not valid YAML: a tab: YAML indents, and separates a key's ':' from its value,"
            " with spaces only",
        ),
        (
            _GATES + "  - id: q\n    op: add\n    inputs: [x, x\noutput: q\n",
            "line 8, column 7: not valid YAML: the '[' at line 7, column 13 is not closed by ']' before this",
        ),
        (
            'name: "qf\n' + _GATES.removeprefix("name: qf\n"),
            "line 5, column 1: not valid YAML: the quoted text that starts at line 1, column 7 has no closing quote",
        ),
        (
            _GATES.replace("op: input", "op input"),
            "line 4, column 5: not valid YAML: this line is not 'key: value' (a key needs ': ' after it)",
        ),
        (
            _GATES + "  - {id: q, op: add, inputs: [x,, x]}\noutput: q\n",
            "line 5, column 33: not valid YAML: an empty item: two commas in a row, or a comma right after the bracket",
        ),
        (  # closed, but two items without a comma: not an unclosed bracket
            _GATES + '  - {id: q, op: add, inputs: [x, "x" x]}\noutput: q\n',
            "line 5, column 38: not valid YAML: a ',' or ']' was expected here, in the '[' at line 5, column 30",
        ),
    ],
    ids=["deeper", "shallower", "tab", "unclosed-bracket", "unclosed-quote", "no-colon", "empty-item", "no-comma"],
)
def test_a_yaml_syntax_error_says_what_to_fix_where(tmp_path: Path, text: str, said: str) -> None:
    """PyYAML speaks of its parser ("expected <block end>, but found '?'"): a circuit's author
    needs to hear which line is wrong and what YAML wants there."""
    assert _refusal(tmp_path / "bad.yaml", text) == f"{tmp_path / 'bad.yaml'}: {said}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '{"gates": [{"id": "x", "op": "input"}, {"id": "f", "op": "exp", "inputs": "x"}], "output": "f"}',
            "invalid circuit: gates[1] (id 'f').inputs: give a list of gate ids, like [x, y], not 'x'",
        ),
        (
            '{"gates": [{"id": "x", "op": "input"}, {"id": "f", "op": "pow", "inputs": ["x"], "param": "two"}],'
            ' "output": "f"}',
            "invalid circuit: gates[1] (id 'f').param: give a number, not 'two'",
        ),
        (  # pydantic took true for 1.0
            '{"gates": [{"id": "x", "op": "input"}, {"id": "f", "op": "pow", "inputs": ["x"], "param": true}],'
            ' "output": "f"}',
            "invalid circuit: gates[1] (id 'f').param: give a number, not True",
        ),
        ('{"gates": [], "output": "x"}', "invalid circuit: gates: give at least one gate"),  # pydantic: "Tuple should"
        (
            '{"gates": [null], "output": "x"}',
            "invalid circuit: gates[0]: give a gate as a mapping with an id and an op, not None",
        ),
        (
            '{"gates": {"id": "x", "op": "input"}, "output": "x"}',
            "invalid circuit: gates: give a list of gates, each with an id and an op, not a mapping of 2 key(s)",
        ),
        (
            '{"gates": [\n  {"id": "x", "op": "input"},\n  ],\n "output": "x"}',
            "line 2, column 29: not valid JSON: a comma after the last item (JSON allows none before ']' or '}')",
        ),
        (
            '{"gates": [{"id": "x", "op": "input"}], "output": "x",}',
            "line 1, column 54: not valid JSON: a comma after the last item (JSON allows none before ']' or '}')",
        ),
    ],
    ids=[
        "inputs-not-a-list",
        "param-not-a-number",
        "param-a-boolean",
        "no-gates",
        "a-gate-not-a-mapping",
        "gates-not-a-list",
        "comma-before-bracket",
        "comma-before-brace",
    ],
)
def test_a_field_of_the_wrong_kind_says_what_to_give(tmp_path: Path, text: str, said: str) -> None:
    """pydantic says "Input should be a valid tuple" and json "Expecting value": the author needs
    to hear what the field holds and what to write."""
    assert _refusal(tmp_path / "bad.json", text) == f"{tmp_path / 'bad.json'}: {said}"


def test_a_name_yaml_reads_as_a_boolean_or_a_number_is_explained(tmp_path: Path) -> None:
    """YAML 1.1 reads an unquoted `on` as True and `1` as 1: the name the user typed is gone."""
    boolean = tmp_path / "on.yaml"
    said = _refusal(boolean, "gates:\n  - {id: on, op: input}\n  - {id: f, op: neg, inputs: [x]}\noutput: f\n")
    assert said == (
        f"{boolean}: invalid circuit: gates[0].id: give a string, not the boolean True "
        "(YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote it)"
    )
    # JSON's true is a boolean by its own rules: no YAML advice
    said = _refusal(tmp_path / "true.json", '{"gates": [{"id": true, "op": "input"}], "output": "x"}')
    assert re.search(r"give a string, not the boolean True$", said)
    said = _refusal(
        tmp_path / "one.yaml", "gates:\n  - {id: 1, op: input}\n  - {id: f, op: neg, inputs: [x]}\noutput: f\n"
    )
    assert re.search(r"^.*one\.yaml: invalid circuit: gates\[0\]\.id: give a string, not the number 1$", said)


def test_consumers_count_edges_and_the_seed() -> None:
    circuit = compile_source("x * x + y")
    assert circuit.consumers == {"x": 2, "y": 1, "mul_1": 1, "f": 1}
    assert [s.consumers for s in circuit.specs()] == [2, 1, 1, 1]
    assert circuit.messages_per_pass() == 2 + 4 + 4 + 1 + 2


def test_readers_name_each_reader_once_and_the_orchestrator_reads_the_output() -> None:
    circuit = compile_source("x * x + y")
    assert circuit.readers == {"x": ("mul_1",), "y": ("f",), "mul_1": ("f",), "f": ("orchestrator",)}
