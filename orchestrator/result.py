"""What a run returns: the output value and the gradient of every input."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RunResult(BaseModel):
    """`{"value": ..., "grads": {...}}`, the same shape the CLI prints with --json."""

    model_config = ConfigDict(frozen=True)

    value: float
    grads: dict[str, float]
