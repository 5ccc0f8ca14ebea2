"""What a run returns: the output value and the gradient of every input."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RunResult(BaseModel):
    """`{"value": ..., "grads": {...}}`, the same shape the CLI prints with --json."""

    model_config = ConfigDict(frozen=True)

    value: float
    grads: dict[str, float]


class Arrived(BaseModel):
    """What the orchestrator had of a run that failed: the output's value, if it came, and the
    gradients that came (a lost message loses one number, not the others)."""

    model_config = ConfigDict(frozen=True)

    value: float | None = None
    grads: dict[str, float] = {}

    @property
    def empty(self) -> bool:
        return self.value is None and not self.grads

    def told(self, inputs: list[str], shown: int = 20) -> str:
        """'value = -12, d/dy = -4, d/dz = 3 (not d/dx)'; "" when nothing came."""
        if self.empty:
            return ""
        parts = [] if self.value is None else [f"value = {self.value:g}"]
        came = [f"d/d{name} = {self.grads[name]:g}" for name in inputs if name in self.grads]
        parts += came[:shown] + ([f"{len(came) - shown} more gradients"] if len(came) > shown else [])
        missing = [f"d/d{name}" for name in inputs if name not in self.grads]
        if not missing:
            return ", ".join(parts)
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        return ", ".join(parts) + f" (not {', '.join(missing[:shown])}{more})"
