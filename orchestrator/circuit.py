"""The circuit model: gates, their wiring and the output, validated as a whole.

A circuit file (JSON or YAML) is this model written out. Validation guarantees what every
other part relies on: unique ids, known ops with the right arity and parameters, every
reference resolvable, an output that exists and no cycles. Gates are kept in the order given
(a file's, or the compiler's); `Circuit.order` lists them with every gate after its inputs, so a
circuit can be evaluated or drawn by walking that list once.
"""

from __future__ import annotations

import json
import re
import reprlib
import sys
from collections import Counter, deque
from collections.abc import Hashable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from gates.ops import OPS
from gates.protocol import BROKER, NAME_PATTERN, NAME_RULE, ORCHESTRATOR, Finite, GateSpec, Name
from orchestrator.errors import CircuitError

MAX_FILE_BYTES = 64 * 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
CIRCUIT_SUFFIXES = (".json", *YAML_SUFFIXES)
"""What a circuit file's name ends in (in any case): JSON, or YAML."""
MAX_GATES = 1_000_000
RESERVED_IDS = frozenset({ORCHESTRATOR, BROKER})
"""Ids no gate may have: the other nodes of a run's messages and traces."""


def _not_a_boolean(value: object) -> object:
    """A parameter is a number: pydantic takes true for 1.0 (and a file's `true` is a slip)."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


class GateDef(BaseModel):
    """One gate of a circuit: its id, its op, the ids it reads (in port order), its parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name
    op: str
    inputs: tuple[Name, ...] = ()
    param: Annotated[Finite, BeforeValidator(_not_a_boolean)] | None = None


class Circuit(BaseModel):
    """A whole circuit. Construct it from data or a file; an invalid one cannot exist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = "circuit"
    gates: Annotated[tuple[GateDef, ...], Field(min_length=1, max_length=MAX_GATES)]
    output: Name

    @model_validator(mode="after")
    def _check(self) -> Circuit:
        _check_gates(self.gates)
        if self.output not in {g.id for g in self.gates}:
            raise ValueError(f"output {self.output!r} is not a gate of this circuit")
        _check_acyclic(self.gates)
        return self

    # -- derived views --------------------------------------------------------------------

    @cached_property
    def by_id(self) -> dict[str, GateDef]:
        return {g.id: g for g in self.gates}

    @property
    def inputs(self) -> list[str]:
        """The ids of the input leaves: the names a run must give values for."""
        return [g.id for g in self.gates if OPS[g.op].fed]

    @property
    def leaves(self) -> list[str]:
        """Every gate the orchestrator feeds at the start of a run (inputs and constants)."""
        return [g.id for g in self.gates if OPS[g.op].leaf]

    @cached_property
    def edges_out(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """The (consumer, port) edges that read each gate's value, in circuit order: `x*x` reads
        x by two. The output's last edge is the orchestrator's (port 0): it sends the seed."""
        edges: dict[str, list[tuple[str, int]]] = {g.id: [] for g in self.gates}
        for g in self.gates:
            for port, source in enumerate(g.inputs):
                edges[source].append((g.id, port))
        edges[self.output].append((ORCHESTRATOR, 0))
        return {gate: tuple(found) for gate, found in edges.items()}

    @cached_property
    def consumers(self) -> dict[str, int]:
        """How many edges read each gate (its gradient is the sum of as many parts)."""
        return {gate: len(edges) for gate, edges in self.edges_out.items()}

    @cached_property
    def readers(self) -> dict[str, tuple[str, ...]]:
        """Who reads each gate's forward value, once each: the gates it feeds and, for the
        output, the orchestrator."""
        return {gate: tuple(dict.fromkeys(reader for reader, _ in edges)) for gate, edges in self.edges_out.items()}

    @cached_property
    def read_twice(self) -> frozenset[tuple[str, str]]:
        """(reader, gate) where the reader takes the gate at more than one port (x*x): two
        gradients go back to it, told apart by their port."""
        return frozenset((g.id, i) for g in self.gates for i in set(g.inputs) if g.inputs.count(i) > 1)

    @cached_property
    def order(self) -> list[GateDef]:
        """Gates in an order where every gate comes after all of its inputs."""
        return _topological(self.gates)

    def specs(self) -> Iterator[GateSpec]:
        """What each gate is told when deployed: its own op and wiring, nothing more.

        One at a time: a validated spec is about 1 KB, and 65,000 of them alive at once only to
        be dropped after deployment would leave the process's memory fragmented.
        """
        for g in self.gates:
            yield self.spec(g)

    def spec(self, g: GateDef) -> GateSpec:
        """What gate `g` is told when deployed."""
        index = self.numbers[g.id]
        return GateSpec(
            id=g.id,
            index=index,
            op=g.op,
            inputs=g.inputs,
            param=g.param,
            consumers=self.consumers[g.id],
            nodes=len(self.nodes),
        )

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """Every node by its number in a traced run's vector clocks (gates/clocks.py): the
        orchestrator 0, then the gates in the circuit's order."""
        return (ORCHESTRATOR, *(g.id for g in self.gates))

    @cached_property
    def numbers(self) -> dict[str, int]:
        """Each gate's number (GateSpec.index): its position in `nodes`."""
        return {g.id: i for i, g in enumerate(self.gates, 1)}

    def critical_path(self) -> int:
        """Gates on the longest input-to-output chain (the hops of one forward pass)."""
        depth: dict[str, int] = {}
        for g in self.order:
            depth[g.id] = 1 + max((depth[s] for s in g.inputs), default=0)
        return depth[self.output]

    def pass_hops(self) -> int:
        """Broker hops on a pass's critical path: feed, each gate's forward up the longest chain and
        the value to the orchestrator; then the seed, each backward step down the chain and the report."""
        return 2 * (self.critical_path() + 1)

    def messages_by_phase(self) -> dict[str, int]:
        """Messages one run publishes, by phase: a feed per leaf, a forward per gate, a backward
        per edge and the seed, a gradient report per leaf."""
        leaves = len(self.leaves)
        return {"feed": leaves, "forward": len(self.gates), "backward": sum(self.consumers.values()), "report": leaves}

    def messages_per_pass(self) -> int:
        return sum(self.messages_by_phase().values())

    # -- files ----------------------------------------------------------------------------

    def dump(self, path: Path) -> None:
        """Write the circuit as JSON or YAML, by the file's suffix (what `load` reads back)."""
        kind = path.suffix.lower()
        if kind not in CIRCUIT_SUFFIXES:
            raise CircuitError(f"{path}: a circuit file ends in .json, .yaml or .yml, so that it can be read back")
        data = self.model_dump(mode="json", exclude_defaults=True)
        text = yaml.safe_dump(data, sort_keys=False) if kind in YAML_SUFFIXES else json.dumps(data, indent=2)
        try:
            path.write_text(text + ("" if text.endswith("\n") else "\n"))
        except OSError as exc:
            raise CircuitError(f"{path}: cannot write the circuit file: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> Circuit:
        """Read and validate a JSON or YAML circuit file; every failure is a CircuitError."""
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise CircuitError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CircuitError(f"{path}: cannot read circuit file: {exc}") from exc
        return cls.parse(text, source=str(path), yaml_syntax=path.suffix.lower() in YAML_SUFFIXES)

    @classmethod
    def parse(cls, text: str, *, source: str = "<circuit>", yaml_syntax: bool = False) -> Circuit:
        if not text.strip():
            return cls.from_data(None, source=source)
        data = _parse_yaml(text, source) if yaml_syntax else _parse_json(text, source)
        return cls.from_data(data, source=source, yaml_syntax=yaml_syntax)

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<circuit>", yaml_syntax: bool = False) -> Circuit:
        if not isinstance(data, dict):
            raise CircuitError(
                f"{source}: invalid circuit: a circuit is one mapping (gates, output, a name); this file {_holds(data)}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            # pydantic adds "too short" for a list whose items failed: noise beside the real cause
            errors = [e for e in errors if e["type"] != "too_short"] or errors
            said = [_problem(e, data) for e in errors[:5]]
            problems = "; ".join(text for text, _ in said)
            if hints := list(dict.fromkeys(hint for _, hint in said if hint)):
                problems += f" ({'; '.join(hints)})"
            if yaml_syntax and any(e["type"] == "string_type" and isinstance(e["input"], bool) for e in errors[:5]):
                problems += " (YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote it)"
            raise CircuitError(f"{source}: invalid circuit: {problems}") from exc


def _holds(data: Any) -> str:
    """What a file that is not a mapping holds, in words."""
    if data is None or data == "":
        return "is empty"
    if isinstance(data, list):
        return "holds a list"
    return f"holds only {data!r}"


def _said(error: ErrorDetails) -> str:
    """A validation error's message in words (a name's regular expression as its rule)."""
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{error['input']!r} is not a name: give {NAME_RULE}"
    if error["type"] == "string_type" and isinstance(error["input"], bool | int | float):
        kind = "boolean" if isinstance(error["input"], bool) else "number"
        return f"give a string, not the {kind} {error['input']!r}"
    if error["type"] in ("tuple_type", "list_type"):
        what = _LISTS.get(str(error["loc"][-1]), "a list")
        return f"give {what}, not {_given(error['input'])}"
    if error["type"] in ("float_type", "float_parsing"):
        return f"give a number, not {_given(error['input'])}"
    if error["type"] == "finite_number":
        return f"give a finite number, not {_given(error['input'])}"
    if error["type"] == "string_type":
        return f"give a string, not {_given(error['input'])}"
    if error["type"] == "too_short" and error["loc"] == ("gates",):
        return "give at least one gate"
    if error["type"] in ("model_type", "dict_type") and error["loc"][:1] == ("gates",):
        return f"give a gate as a mapping with an id and an op, not {_given(error['input'])}"
    return error["msg"].removeprefix("Value error, ")


def _given(value: object) -> str:
    """What a field held, short: a mapping or a list by its size (one may hold a whole circuit)."""
    if isinstance(value, dict):
        return f"a mapping of {len(value)} key(s)" if value else "an empty mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)" if value else "an empty list"
    return reprlib.repr(value)


_LISTS = {"inputs": "a list of gate ids, like [x, y]", "gates": "a list of gates, each with an id and an op"}


class DuplicateKey(ValueError):
    """A JSON object or YAML mapping that gives one key twice (the parsers keep the last)."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, but a mapping may not give a key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            if isinstance(key, Hashable):  # an unhashable key: SafeLoader says so
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except DuplicateKey as exc:
        raise CircuitError(f"{source}: not valid: {exc}") from exc
    except json.JSONDecodeError as exc:
        said, line, column = exc.msg, exc.lineno, exc.colno
        before = text[: exc.pos].rstrip()
        if before.endswith(",") and text[exc.pos : exc.pos + 1] in ("]", "}"):  # at the comma, not after it
            said = "a comma after the last item (JSON allows none before ']' or '}')"
            comma = len(before) - 1
            line, column = text.count("\n", 0, comma) + 1, comma - text.rfind("\n", 0, comma)
        raise CircuitError(f"{source}: line {line}, column {column}: not valid JSON: {said}") from exc
    except RecursionError as exc:
        raise CircuitError(f"{source}: JSON nested too deeply") from exc
    except ValueError as exc:  # a whole number past Python's limit on the digits it converts
        raise CircuitError(f"{source}: {too_long_number(text) or exc}") from exc


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as exc:
        mark, problem = _yaml_problem(exc)
        where = f"{_at(mark)}: " if mark else ""
        raise CircuitError(f"{source}: {where}not valid YAML: {problem}") from exc
    except RecursionError as exc:
        raise CircuitError(f"{source}: YAML nested too deeply") from exc
    except yaml.YAMLError as exc:
        raise CircuitError(f"{source}: not valid YAML: {exc}") from exc
    except ValueError as exc:
        raise CircuitError(f"{source}: {too_long_number(text) or exc}") from exc


def too_long_number(text: str) -> str | None:
    """Where `text` has a whole number too long for Python to read (json and yaml then raise a
    bare ValueError, "Exceeds the limit (4300 digits) for integer string conversion"), said so."""
    found = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
    if found is None:
        return None
    line, column = text.count("\n", 0, found.start()) + 1, found.start() - text.rfind("\n", 0, found.start())
    return f"line {line}, column {column}: a number of {len(found[0]):,} digits is too long to read"


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where PyYAML's error is and what it means, in words its author can act on: PyYAML speaks
    of its parser ("expected <block end>, but found '?'"), and most of its errors are indentation."""
    problem, context, opened = exc.problem or "", exc.context or "", exc.context_mark
    if "'\\t'" in problem:
        return exc.problem_mark, "a tab: YAML indents, and separates a key's ':' from its value, with spaces only"
    if problem.startswith("expected <block end>"):
        return exc.problem_mark, (
            "this line's indentation does not fit the lines above it (the keys of one mapping start in"
            " one column, and every item of a list starts with '-' in that list's column)"
        )
    if problem == "mapping values are not allowed here":
        return exc.problem_mark, (
            "a ':' where no key can start (a line indented deeper than the key above it, a key above"
            " with no space after its ':', or a value holding ': ' that needs quotes)"
        )
    if problem == "could not find expected ':'" and opened is not None:
        return opened, "this line is not 'key: value' (a key needs ': ' after it)"
    if context == "while parsing a flow node":
        return exc.problem_mark, "an empty item: two commas in a row, or a comma right after the bracket"
    if context in ("while parsing a flow sequence", "while parsing a flow mapping") and opened is not None:
        bracket, closing = ("[", "]") if "sequence" in context else ("{", "}")
        if "<stream end>" in problem or exc.problem_mark is None or exc.problem_mark.line > opened.line:
            return exc.problem_mark, f"the '{bracket}' at {_at(opened)} is not closed by '{closing}' before this"
        return exc.problem_mark, f"a ',' or '{closing}' was expected here, in the '{bracket}' at {_at(opened)}"
    if context == "while scanning a quoted scalar" and opened is not None:
        return exc.problem_mark, f"the quoted text that starts at {_at(opened)} has no closing quote"
    return exc.problem_mark, problem or str(exc)


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _problem(error: ErrorDetails, data: Any) -> tuple[str, str | None]:
    """One validation error: where (nothing for the circuit as a whole) and what, and for a
    field missing or unknown, which fields there are (said once however many are)."""
    where = _location(error["loc"], data)
    if error["type"] in ("missing", "extra_forbidden"):
        level = tuple(key for key in error["loc"][:-1] if isinstance(key, str))
        what = "missing" if error["type"] == "missing" else "not a field"
        return f"{where}: {what}", {(): _FIELDS, ("gates",): _GATE_FIELDS}.get(level)
    return (f"{where}: {_said(error)}" if where else _said(error)), None


_FIELDS = "a circuit has gates, output and, optionally, name"
_GATE_FIELDS = "a gate has id, op and, as its op needs, inputs and param"


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """'gates[3] (id 'f').op' rather than pydantic's bare 'gates.3.op'."""
    parts: list[str] = []
    for i, key in enumerate(loc):
        if isinstance(key, int) and loc[:i] == ("gates",):
            gate_id = _gate_id(data, key)
            parts.append(f"[{key}]" + (f" (id {gate_id!r})" if gate_id else ""))
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts)


def _gate_id(data: Any, index: int) -> str | None:
    try:
        gate_id = data["gates"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return None
    return gate_id if isinstance(gate_id, str) else None


def _check_gates(gates: tuple[GateDef, ...]) -> None:
    ids = [g.id for g in gates]
    duplicated = sorted(gid for gid, n in Counter(ids).items() if n > 1)
    if duplicated:
        raise ValueError(f"gate ids must be unique; repeated: {', '.join(map(repr, duplicated[:5]))}")
    known = set(ids)
    for index, g in enumerate(gates):
        where = f"gates[{index}] (id {g.id!r})"
        if g.id in RESERVED_IDS:
            raise ValueError(f"{where}: {g.id!r} names the {g.id} in messages and traces; call the gate something else")
        op = OPS.get(g.op)
        if op is None:
            raise ValueError(f"{where}: unknown op {g.op!r}; known ops: {', '.join(OPS)}")
        if len(g.inputs) != op.arity:
            raise ValueError(f"{where}: op {g.op!r} takes {op.arity} input(s), got {len(g.inputs)}")
        if op.takes_param and g.param is None:
            raise ValueError(f"{where}: op {g.op!r} needs a numeric 'param'")
        if not op.takes_param and g.param is not None:
            raise ValueError(f"{where}: op {g.op!r} takes no 'param'")
        for source in g.inputs:
            if source not in known:
                raise ValueError(f"{where}: input {source!r} is not a gate of this circuit")


def _check_acyclic(gates: tuple[GateDef, ...]) -> None:
    placed = {g.id for g in _topological(gates)}
    if len(placed) < len(gates):
        stuck = {g.id: g for g in gates if g.id not in placed}
        raise ValueError(f"the circuit has a cycle: {' -> '.join(_find_cycle(stuck))}")


def _topological(gates: tuple[GateDef, ...]) -> list[GateDef]:
    """Kahn's algorithm (iterative: circuits may be far deeper than Python's recursion limit)."""
    waiting = {g.id: len(set(g.inputs)) for g in gates}
    readers: dict[str, list[GateDef]] = {}
    for g in gates:
        for source in set(g.inputs):
            readers.setdefault(source, []).append(g)
    ready = deque(g for g in gates if waiting[g.id] == 0)
    order: list[GateDef] = []
    while ready:
        g = ready.popleft()
        order.append(g)
        for reader in readers.get(g.id, []):
            waiting[reader.id] -= 1
            if waiting[reader.id] == 0:
                ready.append(reader)
    return order


def _find_cycle(stuck: dict[str, GateDef]) -> list[str]:
    """Follow inputs among the gates that could not be ordered until one repeats."""
    path: list[str] = []
    seen: dict[str, int] = {}
    gid = next(iter(stuck))
    while gid not in seen:
        seen[gid] = len(path)
        path.append(gid)
        gid = next(s for s in stuck[gid].inputs if s in stuck)
    return [*path[seen[gid] :], gid]
