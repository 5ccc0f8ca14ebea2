"""Every request the page may send over its WebSocket, as pydantic models.

A request that does not validate is answered with a message that names the field, never a
traceback; nothing in a request is ever executed (sources go through the compiler's whitelist).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from gates.faults import Faults
from gates.protocol import Finite, Name

MAX_SOURCE = 200_000
"""Characters of source a request may carry (a 1,000-gate expression is ~10,000)."""
MAX_INPUTS = 10_000
MAX_RUN_TIMEOUT = 600.0
"""The longest a pass from the page may take: given, or grown with its circuit (web/session.py)."""


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FaultRates(_Request):
    """What the fault injector does to the gates of the next runs (in this process or on our hosts)."""

    drop: Annotated[float, Field(ge=0, le=1)] = 0.0
    dup: Annotated[float, Field(ge=0, le=1)] = 0.0
    delay_from_ms: Annotated[float, Field(ge=0, le=5000)] = 0.0
    delay_ms: Annotated[float, Field(ge=0, le=5000)] = 0.0
    """Each message waits from `delay_from_ms` to `delay_ms` (a random time in between)."""
    reorder: bool = False
    seed: Annotated[int, Field(ge=0, le=2**31)] = 0

    @model_validator(mode="after")
    def _ordered(self) -> FaultRates:
        if self.delay_from_ms > self.delay_ms:
            raise ValueError(f"a delay from {self.delay_from_ms:g} ms to {self.delay_ms:g} ms: give the shorter first")
        return self

    def text(self) -> str:
        """The `--faults` spelling of what is on (gates/faults.py), '' for none."""
        delay = (self.delay_from_ms, self.delay_ms)
        faults = Faults(drop=self.drop, dup=self.dup, delay_ms=delay, reorder=self.reorder, seed=self.seed)
        return faults.text if faults.active else ""


class Compile(_Request):
    """Compile a source and say what its inputs are (or where it is wrong)."""

    type: Literal["compile"]
    source: Annotated[str, Field(max_length=MAX_SOURCE)]


class Run(_Request):
    """Run a pass: of a source, of a worked example, or on a live deployment."""

    type: Literal["run"]
    source: Annotated[str | None, Field(max_length=MAX_SOURCE)] = None
    example: Annotated[int | None, Field(ge=0)] = None
    deployment: Name | None = None
    inputs: Annotated[dict[Name, Finite], Field(max_length=MAX_INPUTS)] = Field(default_factory=dict)
    fill: Finite | None = None
    """The value of every input `inputs` leaves out (a deployment may have hundreds); None: none."""
    step: bool = False
    where: Literal["here", "hosts"] = "here"
    faults: FaultRates = FaultRates()
    timeout: Annotated[float, Field(gt=0, le=MAX_RUN_TIMEOUT)] | None = None
    """Seconds the pass may take; None: grown with the circuit (web/session.run_timeout)."""


class Restart(_Request):
    """Run the last request again (the same inputs, the same mode)."""

    type: Literal["restart"]


class Travel(_Request):
    """Run the last request again, replaying its first `index` choices, then wait for the next."""

    type: Literal["travel"]
    index: Annotated[int, Field(ge=0)]


class Act(_Request):
    """What to do with one held message."""

    type: Literal["deliver", "drop", "duplicate", "hold"]
    id: Annotated[str, Field(pattern=r"^m[0-9]{1,9}$")]


class DeliverAll(_Request):
    """Deliver everything held now and from now on (but what is pinned with `hold`): the pass finishes."""

    type: Literal["deliver_all"]


class HostAction(_Request):
    """Kill (SIGKILL) or start again a gate host process that `gatemesh serve --hosts` started."""

    type: Literal["kill_host", "start_host"]
    name: Name


class Watch(_Request):
    """Follow a live deployment: show each run others make on it (`gatemesh run --deployed NAME`)."""

    type: Literal["watch"]
    deployment: Name


class Refresh(_Request):
    """Send the whole state again (the cluster's hosts and deployments too)."""

    type: Literal["refresh"]


Request = Annotated[
    Compile | Run | Restart | Travel | Act | DeliverAll | HostAction | Watch | Refresh, Field(discriminator="type")
]
REQUEST: TypeAdapter[Request] = TypeAdapter(Request)
PUBLISHING = (Run, Restart, Travel, Act, DeliverAll, HostAction)
"""Requests that publish (a run, its deployment, a delivery) or kill: refused by a server that only watches."""


class BadRequest(ValueError):
    """A request that does not validate; the message names what is wrong."""


def parse_request(raw: str | bytes) -> Request:
    try:
        return REQUEST.validate_json(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:3]
        ]
        raise BadRequest("bad request: " + "; ".join(problems)) from None
