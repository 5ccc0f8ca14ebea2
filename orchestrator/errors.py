"""Every error the orchestrator raises, under one root so callers can catch them all.

GatemeshError
├── CompileError      source text that is not a gatemesh expression (line and column)
├── CircuitError      a circuit file or model that is not a valid circuit (which gate)
├── InputError        what a user gave that cannot be used: run inputs, an option's value, a
│   │                 file to read or write, training data that diverges
│   ├── TraceError    a trace file that cannot be read (orchestrator/trace.py)
│   ├── NotFinite     a loss that cannot be computed (orchestrator/train.py)
│   └── DrawError     a picture that cannot be drawn (viz/svg.py)
├── BrokerError       the broker cannot be reached or started, or lacks what gatemesh needs
│   └── GatesNotReady gates that never said Ready in time (a deploy's, not the broker's fault)
├── DeployError       no such deployment, not enough hosts, a bad placement
└── RunError          a run that did not produce a result
    ├── GateFailed    a gate reported that the run cannot complete (e.g. log of -1)
    ├── HostLost      a gate host of the deployment died or restarted; names it and its gates
    ├── DeploymentGone the deployment was undeployed or replaced while the runner was on it
    ├── RunConnectionLost the orchestrator's connection to the broker broke during the run
    ├── ReadOnly      a run asked of a deployment watched, not driven (orchestrator/watch.py)
    └── RunTimeout    the run did not finish in time; names the gates it waits on
"""

from __future__ import annotations

from gates.errors import NotAuthorised, TransportError
from gates.lifecycle import leaves
from gates.transport import BrokerAddress
from orchestrator.result import Arrived


class GatemeshError(Exception):
    """Root of every gatemesh error."""


class CompileError(GatemeshError):
    """Source text rejected by the compiler, with the 1-based line and column of the problem."""

    def __init__(self, reason: str, line: int | None = 1, column: int | None = 1) -> None:
        """line None: about the program as a whole (the --output it was given), no place in it."""
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(reason if line is None else f"line {line}, column {column}: {reason}")


class CircuitError(GatemeshError):
    """A circuit that fails validation; the message names the gate or field."""


class InputError(GatemeshError):
    """What a user gave cannot be used: run inputs missing, unknown or not numbers, an option's
    value, a file, data; the message names which."""


class BrokerError(GatemeshError):
    """The broker could not be reached or started, or cannot carry gatemesh (from a gates.errors.TransportError)."""


class GatesNotReady(BrokerError):
    """Gates that never said Ready within the time given (their hosts hung, or overloaded): what a
    deploy takes back. A BrokerError, as the deploy waits for them through the broker; unlike a
    broker refusing a connection, trying again would only double the wait (web/targets.py)."""


def broker_failed(broker: BrokerAddress, exc: BaseException, doing: str | None = None) -> BrokerError:
    """`doing` (None: connecting) failed at the broker at `broker` with `exc`, the broker named
    once: a transport error may name it already ("cannot connect to the broker at ...")."""
    said = str(exc) or ("it did not answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
    if isinstance(exc, NotAuthorised):
        said += _account_hint(broker)
    named = isinstance(exc, TransportError) and exc.broker is not None
    if doing is None:
        return BrokerError(said if named else f"cannot connect to the broker at {broker}: {said}")
    return BrokerError(f"{doing}: {said}" if named else f"{doing} from the broker at {broker}: {said}")


def _account_hint(broker: BrokerAddress) -> str:
    """What to do about a broker that refused the connection's credentials (or their absence)."""
    if broker.username is None:
        scheme = "mqtts" if broker.tls else "mqtt"
        return (
            "; this broker wants an account: give --secure DIR (the accounts `gatemesh secure init` made "
            f"for it) or {scheme}://user:password@host:port"
        )
    return (
        f"; it refused user {broker.username!r}: check the password, and that the broker's password file has "
        "this account"
    )


class DeployError(GatemeshError):
    """A deployment that cannot be made, found or used; the message says what is missing."""


class RunError(GatemeshError):
    """A run ended without a result."""

    def __init__(self, message: str, run: str) -> None:
        self.run = run
        super().__init__(message)


class GateFailed(RunError):
    """A gate reported an error for this run."""

    def __init__(self, message: str, run: str, gate: str, code: str) -> None:
        self.gate = gate
        self.code = code
        super().__init__(message, run)


class RunTimeout(RunError):
    """The run did not finish within its timeout."""

    def __init__(self, message: str, run: str, waiting_on: list[str], arrived: Arrived | None = None) -> None:
        self.waiting_on = waiting_on
        self.arrived = arrived or Arrived()
        """The value and the gradients that did arrive (the message says them too)."""
        super().__init__(message, run)


class HostLost(RunError):
    """A host that the deployment's gates live on is gone: its runs can never complete."""

    def __init__(self, message: str, run: str, hosts: list[str], gates: list[str]) -> None:
        self.hosts = hosts
        self.gates = gates
        super().__init__(message, run)


class DeploymentGone(RunError):
    """The deployment a run was on was undeployed or replaced meanwhile: its gates are stopping."""


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a user should see from a failed task group: the first GatemeshError in it, else the group."""
    for leaf in leaves(group):
        if isinstance(leaf, GatemeshError):
            return leaf
    return group


class RunConnectionLost(RunError):
    """The orchestrator lost the broker mid-run; the run may be retried once it is back."""
