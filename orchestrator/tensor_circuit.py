"""The tensor circuit: gates that carry arrays, with every shape checked when it is built.

The array twin of orchestrator/circuit.py, written the same way as a JSON or YAML file:

    {"name": "tiny", "output": "loss", "observe": ["score"], "gates": [
      {"id": "X", "op": "input", "shape": [2, 4]},
      {"id": "y", "op": "input", "shape": [1, 4]},
      {"id": "W", "op": "param", "shape": [1, 2]},
      {"id": "score", "op": "matmul", "inputs": ["W", "X"]},
      {"id": "loss", "op": "hinge", "inputs": ["score", "y"], "param": 0.25}]}

Leaves declare their shape: an `input` is data the trainer feeds each step, a `param` a
tensor that learns. Every other gate's shape is inferred from its inputs' through the op's
shape rule, so a circuit whose shapes do not fit cannot exist: the error names the gate, its
op and both shapes. Validation also keeps the scalar circuit's guarantees (unique ids, known
ops with the right arity and parameters, resolvable inputs, no cycles), with its messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gates.protocol import Name
from gates.tensor_ops import LEAVES, TENSOR_OPS, Shape, ShapeError, out_shape
from gates.tensor_protocol import ShapeField, TensorSpec
from orchestrator.circuit import (
    MAX_FILE_BYTES,
    YAML_SUFFIXES,
    GateDef,
    _check_acyclic,
    _location,
    _parse_json,
    _parse_yaml,
    _topological,
)
from orchestrator.errors import CircuitError

MAX_TENSOR_GATES = 10_000


class TensorGateDef(GateDef):
    """A gate of a tensor circuit: a scalar GateDef with the shape a leaf declares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: ShapeField | None = None


class TensorCircuit(BaseModel):
    """A whole tensor circuit, validated as a whole: shapes included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = "tensor-circuit"
    gates: Annotated[tuple[TensorGateDef, ...], Field(min_length=1, max_length=MAX_TENSOR_GATES)]
    output: Name
    observe: tuple[Name, ...] = Field(default=(), description="gates whose values the trainer reads besides the output")

    @model_validator(mode="after")
    def _check(self) -> TensorCircuit:
        _check_gates(self.gates)
        known = {g.id for g in self.gates}
        for name in (self.output, *self.observe):
            if name not in known:
                raise ValueError(f"{name!r} (output or observed) is not a gate of this circuit")
        _check_acyclic(self.gates)
        if self.shapes[self.output] != ():
            raise ValueError(
                f"output {self.output!r} must be a scalar (a loss), its shape is {self.shapes[self.output]}"
            )
        return self

    # -- derived views --------------------------------------------------------------------

    @cached_property
    def by_id(self) -> dict[str, TensorGateDef]:
        return {g.id: g for g in self.gates}

    @cached_property
    def order(self) -> list[TensorGateDef]:
        return [self.by_id[g.id] for g in _topological(self.gates)]

    @cached_property
    def shapes(self) -> dict[str, Shape]:
        """Every gate's output shape; ValueError naming the gate and both shapes if they clash."""
        shapes: dict[str, Shape] = {}
        for g in self.order:
            if g.op in LEAVES:
                assert g.shape is not None
                shapes[g.id] = g.shape
                continue
            given = tuple(shapes[s] for s in g.inputs)
            try:
                shapes[g.id] = out_shape(TENSOR_OPS[g.op], given, g.param)
            except ShapeError as exc:
                named = ", ".join(f"{s} {shapes[s]}" for s in g.inputs)
                raise ValueError(f"gate {g.id!r} ({g.op} of {named}): {exc}") from None
        return shapes

    @property
    def params(self) -> list[str]:
        return [g.id for g in self.gates if g.op == "param"]

    @property
    def param_shapes(self) -> dict[str, Shape]:
        return {name: self.shapes[name] for name in self.params}

    @property
    def inputs(self) -> list[str]:
        """The data leaves: what the trainer feeds each step."""
        return [g.id for g in self.gates if g.op == "input"]

    @cached_property
    def learns(self) -> dict[str, bool]:
        """Whether a gate's value depends on a parameter: only those are sent gradients."""
        learns: dict[str, bool] = {}
        for g in self.order:
            learns[g.id] = g.op == "param" or any(learns[s] for s in g.inputs)
        return learns

    @cached_property
    def consumers(self) -> dict[str, int]:
        """Gradient contributions each gate waits for: (consumer, port) edges that send one, plus the seed."""
        edges = Counter(s for g in self.gates for s in g.inputs if self.learns[s])
        edges[self.output] += 1
        return {g.id: edges[g.id] for g in self.gates}

    def spec(self, g: TensorGateDef) -> TensorSpec:
        return TensorSpec(
            id=g.id,
            op=g.op,
            inputs=g.inputs,
            input_shapes=tuple(self.shapes[s] for s in g.inputs),
            shape=self.shapes[g.id],
            param=g.param,
            needs_grad=tuple(self.learns[s] for s in g.inputs),
            consumers=self.consumers[g.id],
        )

    def specs(self) -> Iterator[TensorSpec]:
        for g in self.gates:
            yield self.spec(g)

    def critical_path(self) -> int:
        """Gates on the longest leaf-to-output chain."""
        depth: dict[str, int] = {}
        for g in self.order:
            depth[g.id] = 1 + max((depth[s] for s in g.inputs), default=0)
        return depth[self.output]

    # -- files ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> TensorCircuit:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise CircuitError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CircuitError(f"{path}: cannot read circuit file: {exc}") from exc
        yaml_syntax = path.suffix.lower() in YAML_SUFFIXES
        data = _parse_yaml(text, str(path)) if yaml_syntax else _parse_json(text, str(path))
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<tensor circuit>") -> TensorCircuit:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = [e for e in exc.errors(include_url=False) if e["type"] != "too_short"] or exc.errors()
            problems = "; ".join(
                f"{_location(e['loc'], data)}: {e['msg'].removeprefix('Value error, ')}" for e in errors[:5]
            )
            raise CircuitError(f"{source}: invalid tensor circuit: {problems}") from exc


def _check_gates(gates: tuple[TensorGateDef, ...]) -> None:
    ids = [g.id for g in gates]
    duplicated = sorted(gid for gid, n in Counter(ids).items() if n > 1)
    if duplicated:
        raise ValueError(f"gate ids must be unique; repeated: {', '.join(map(repr, duplicated[:5]))}")
    known = set(ids)
    for index, g in enumerate(gates):
        where = f"gates[{index}] (id {g.id!r})"
        if g.op in LEAVES:
            if g.shape is None or g.inputs or g.param is not None:
                raise ValueError(f"{where}: an {g.op!r} leaf declares a 'shape' and has no inputs or param")
            continue
        op = TENSOR_OPS.get(g.op)
        if op is None:
            raise ValueError(f"{where}: unknown op {g.op!r}; known: {', '.join([*LEAVES, *TENSOR_OPS])}")
        if g.shape is not None:
            raise ValueError(f"{where}: only input and param leaves declare a shape; {g.op}'s is inferred")
        if len(g.inputs) != op.arity:
            raise ValueError(f"{where}: op {g.op!r} takes {op.arity} input(s), got {len(g.inputs)}")
        if op.takes_param != (g.param is not None):
            raise ValueError(f"{where}: op {g.op!r} {'needs a numeric' if op.takes_param else 'takes no'} 'param'")
        for source in g.inputs:
            if source not in known:
                raise ValueError(f"{where}: input {source!r} is not a gate of this circuit")
