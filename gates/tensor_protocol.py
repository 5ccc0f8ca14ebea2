"""What a tensor gate is told: its spec, and the retained assignment that carries it to a host.

A tensor gate's messages are binary frames (gates/frame.py) on the same topics a scalar gate
uses (gatemesh/C/feed|fwd|grad|report/G); its Ready, ErrorReport, Status, Release and Probe
are the scalar protocol's JSON messages. Its assignment sits on the same retained spec topic, with its
own `type`, so one gate host runs scalar and tensor gates alike.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from gates.protocol import Assignment, Finite, Incarnation, Name
from gates.tensor_ops import LEAVES, TENSOR_OPS

Dim = Annotated[int, Field(ge=1, le=1 << 17)]
ShapeField = Annotated[tuple[Dim, ...], Field(max_length=8)]


class TensorSpec(BaseModel):
    """All a tensor gate knows: its op, its inputs and their shapes, and who needs its gradient."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name
    op: str = Field(description="a tensor op, `input` (fed data) or `param` (a tensor that learns)")
    inputs: tuple[Name, ...] = ()
    input_shapes: tuple[ShapeField, ...] = ()
    shape: ShapeField = Field(description="this gate's output (for a leaf: the tensor it holds or is fed)")
    param: Finite | None = None
    needs_grad: tuple[bool, ...] = Field(
        default=(), description="per input port: whether that input wants its gradient (data does not)"
    )
    consumers: Annotated[int, Field(ge=0)] = Field(
        description="gradient contributions to wait for: edges from gates that send one, plus the trainer's seed"
    )

    @model_validator(mode="after")
    def _fits_its_op(self) -> TensorSpec:
        if self.op in LEAVES:
            if self.inputs or self.param is not None:
                raise ValueError(f"gate {self.id!r}: a {self.op} leaf has no inputs and no param")
            return self
        op = TENSOR_OPS.get(self.op)
        if op is None:
            raise ValueError(f"gate {self.id!r}: unknown tensor op {self.op!r}")
        arity = len(self.inputs)
        if arity != op.arity or len(self.input_shapes) != arity or len(self.needs_grad) != arity:
            raise ValueError(
                f"gate {self.id!r}: op {self.op!r} takes {op.arity} input(s) with a shape and needs_grad each"
            )
        if op.takes_param != (self.param is not None):
            raise ValueError(f"gate {self.id!r}: op {self.op!r} {'needs' if op.takes_param else 'takes no'} param")
        return self


class TensorAssignment(BaseModel):
    """Run this tensor gate: retained on gatemesh/C/spec/G, obeyed only by `host` in `incarnation`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["assign_tensor"] = "assign_tensor"
    circuit: Name
    sender: Name
    host: Name
    incarnation: Incarnation
    spec: TensorSpec


ANY_ASSIGNMENT: TypeAdapter[Assignment | TensorAssignment] = TypeAdapter(
    Annotated[Assignment | TensorAssignment, Field(discriminator="type")]
)
"""What a gate host finds on a spec topic: a scalar gate's assignment or a tensor gate's."""
