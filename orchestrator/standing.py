"""Where a run that timed out stands, in words, from its gates' answers to the probe.

The runner probes the gates of a run that outlasted its timeout (orchestrator/runner.py) and
fails it with these words; a watched deployment says the same of a run it gives up on
(orchestrator/watch.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from gates.protocol import Status
from orchestrator.circuit import Circuit

SILENT_NAMED = 3
"""Gates that did not answer a probe named one by one; more are counted in one line."""


_TELLING: dict[str | None, int] = {None: 0, "waiting_inputs": 1, "unknown": 2, "waiting_grads": 4}
"""How much a gate's standing says about where a run stopped (less first): a gate that did not
answer, then one still waiting for a value (it names the input that did not come); a gate that
never heard of the run is often only downstream of it; a lost report (3); the gates that wait
for gradients are only waiting for the rest of the pass."""


def standing(
    circuit: Circuit, statuses: Mapping[str, Status], waiting_for: Set[str], *, value_arrived: bool = True
) -> tuple[list[str], str]:
    """The gates a timed-out run waits on (in the circuit's order), and where they stand in words:
    where the pass stopped first, then what waits on it, at most eight. `value_arrived`: the
    orchestrator has the output's value (else, if the output gate sent it, it was lost on the
    way, and every gate waits for a backward pass that never began)."""
    stuck: list[str] = []
    described: list[tuple[int, str]] = []
    output = circuit.by_id[circuit.output]
    sent = statuses.get(output.id)
    if not value_arrived and sent is not None and sent.state in ("waiting_grads", "finished"):
        described.append(
            (
                -1,
                f"the orchestrator never got the value of {output.op}({output.id}), which computed and sent it: "
                "lost on its way, so the backward pass never began",
            )
        )
    silent = [g for g in circuit.order if g.id not in statuses]
    grouped = len(silent) > SILENT_NAMED  # answers lost (a fault injector's), not a dead gate each: one line
    if grouped:
        names = [f"{g.op}({g.id})" for g in silent]
        rest = f"{len(silent) - SILENT_NAMED} more" if len(silent) > SILENT_NAMED + 1 else names[-1]  # not "1 more"
        described.append(
            (
                0,
                f"{len(silent)} gates did not answer the probe ({', '.join(names[:SILENT_NAMED])} and {rest}: "
                "answers travel like any message, so a fault injector drops and delays them too, and a lost host "
                "takes its gates)",
            )
        )
    for g in circuit.order:
        status = statuses.get(g.id)
        if status is not None and status.state == "finished":
            if g.id in waiting_for:  # done at the gate; its report is what went missing
                stuck.append(g.id)
                described.append((3, f"{g.op}({g.id}) finished, but its gradient report never arrived"))
            continue
        stuck.append(g.id)
        if status is None and grouped:
            continue
        described.append(
            (_TELLING.get(status.state if status else None, 0), f"{g.op}({g.id}) {describe_status(status)}")
        )
    described.sort(key=lambda told: told[0])
    shown = "; ".join(text for _, text in described[:8])
    return stuck, shown + (f"; and {len(described) - 8} more" if len(described) > 8 else "")


def describe_status(status: Status | None) -> str:
    """Where a gate stands in a run, from its answer to a probe (None: it did not answer)."""
    if status is None:
        return "did not answer"
    if status.state == "waiting_inputs":
        return f"waits for input(s) {', '.join(status.missing_inputs)}"
    if status.state == "waiting_grads":
        return f"has {status.grads_received} of {status.grads_expected} gradient(s)"
    return "has not heard of the run"
