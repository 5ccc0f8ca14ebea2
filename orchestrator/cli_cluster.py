"""`gatemesh host`, `deploy`, `undeploy` and `status`: gate hosts and the deployments that live on them."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gates.__main__ import main as serve_host
from gates.errors import TransportError
from gates.protocol import deployment_topic, last_level
from gates.transport import DEFAULT_BROKER, BrokerAddress
from orchestrator.cli_common import (
    DASH_FIRST,
    ClusterBrokerOption,
    HostsOption,
    OutputOption,
    PlacementOption,
    SecureOption,
    broker_address,
    err,
    host_choice,
    load_circuit,
    out,
    print_line,
    say_waiting,
    seconds,
    secure_dir,
)
from orchestrator.cluster import ClusterView, DeploymentRecord, read_cluster
from orchestrator.deploy import deploy_to_hosts, undeploy
from orchestrator.errors import InputError, broker_failed

TRANSPORT_ERRORS = (TransportError, TimeoutError, OSError)
"""What reading the broker can fail with when the broker, not the request, is the problem."""


def register(app: typer.Typer) -> None:
    # The host's options are `python -m gates`'s own parser's: one definition, handed every argument.
    passthrough = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command(context_settings=passthrough, add_help_option=False)(host)
    app.command()(deploy)
    app.command("undeploy")(undeploy_command)
    app.command()(status)


def host(ctx: typer.Context) -> None:
    """Run a gate host: it runs whatever gates deployments assign to it (`python -m gates`; see --help)."""
    serve_host(ctx.args, prog="gatemesh host")


def deploy(
    source: Annotated[
        str,
        typer.Argument(help=f"an expression, a program or a circuit file {DASH_FIRST}"),
    ],
    name: Annotated[str, typer.Option("--name", help="the deployment's name, used by run --deployed and undeploy")],
    hosts: HostsOption = None,
    placement: PlacementOption = "round-robin",
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    output: OutputOption = None,
    timeout: Annotated[
        float, typer.Option(callback=seconds, help="seconds to wait for the hosts and for every gate to be ready")
    ] = 30.0,
    secure: SecureOption = None,
) -> None:
    """Place a circuit's gates on live gate hosts and wait until every gate is ready."""
    circuit = load_circuit(source, output)
    accounts = secure_dir(secure)
    address = broker_address(broker, accounts)
    started = time.perf_counter()

    def replacing(old: DeploymentRecord) -> None:
        err.print(
            f"replacing deployment {old.name} ({old.circuit_id}, {len(old.placement)} gates on "
            f"{', '.join(old.hosts)}): its runs in flight fail",
            highlight=False,
            soft_wrap=True,
        )

    record = asyncio.run(
        deploy_to_hosts(
            circuit,
            name,
            address,
            hosts=host_choice(hosts),
            placement=placement,
            timeout=timeout,
            secure=accounts,
            replacing=replacing,
            waiting=say_waiting,
        )
    )
    elapsed = time.perf_counter() - started
    per_host = Counter(record.placement.values())
    spread = ", ".join(f"{host}: {per_host[host]}" for host in record.hosts)
    print_line(
        f"deployed {record.name} ({record.circuit_id}): {len(record.placement)} gates on {len(record.hosts)} "
        f"host(s) ({spread}), all ready in {elapsed:.2f} s"
    )


def undeploy_command(
    name: Annotated[str, typer.Argument(help="the deployment's name")],
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    secure: SecureOption = None,
) -> None:
    """Delete a deployment (its retained messages too); its hosts stop its gates."""
    accounts = secure_dir(secure)
    head = asyncio.run(undeploy(name, broker_address(broker, accounts), secure=accounts))
    if head is None:
        said = "its record was unreadable; its head and parts are deleted"
    else:
        said = f"{head.gates} gates on {', '.join(head.hosts)}"
    out.print(f"undeployed {name}: {said}", highlight=False)


def status(
    name: Annotated[
        str | None, typer.Argument(help="show this deployment's gates too (with --json: this deployment alone)")
    ] = None,
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
    secure: Annotated[
        Path | None,
        typer.Option("--secure", help="a directory made by `gatemesh secure init`: read as the orchestrator's account"),
    ] = None,
) -> None:
    """List the gate hosts, the deployments and (for one deployment) its gates, with their state."""
    address = broker_address(broker, secure_dir(secure))
    try:
        view = asyncio.run(read_cluster(address, with_ready=True))
    except TRANSPORT_ERRORS as exc:
        raise broker_failed(address, exc, "cannot read the cluster's state") from exc
    state = cluster_state(view)
    if name is not None and name not in state["deployments"]:
        raise InputError(f"no deployment named {name!r} (deployments: {', '.join(state['deployments']) or 'none'})")
    if as_json:
        if name is not None:
            state["deployments"] = {name: state["deployments"][name]}
        print_line(json.dumps(state, indent=2))
        return
    said = state["deployments"][name]["state"] if name is not None else ""
    if said.startswith("unreadable: "):  # no gates to list: an empty table and exit status 0 said nothing
        why = said.removeprefix("unreadable: ")
        raise InputError(
            f"the record of deployment {name!r} cannot be read: {why}; `gatemesh undeploy {name}` deletes it"
        )
    print_cluster(state, name, address)


def cluster_state(view: ClusterView) -> dict[str, Any]:
    """The cluster as plain data: what `status --json` prints."""
    deployments: dict[str, Any] = {}
    for dname, record in sorted(view.deployments.items()):
        lost = view.lost_hosts(record)
        ready = view.ready.get(record.circuit_id, set())
        gates = {}
        for gate, host in record.placement.items():
            state = f"lost: host {host} {lost[host]}" if host in lost else "ready" if gate in ready else "not ready"
            gates[gate] = {"op": record.circuit.by_id[gate].op, "host": host, "state": state}
        if lost:
            state = "broken: " + "; ".join(f"host {h} {why}" for h, why in lost.items())
        elif all(g in ready for g in record.placement):
            state = "ready"
        else:
            state = f"starting: {sum(g in ready for g in record.placement)} of {len(record.placement)} gates ready"
        if record.transient:
            state += " (made for one run)"
        deployments[dname] = {
            "circuit_id": record.circuit_id,
            "state": state,
            "inputs": record.circuit.inputs,
            "output": record.circuit.output,
            "hosts": dict(Counter(record.placement.values())),
            "gates": gates,
        }
    for dname, head in sorted(view.broken.items()):  # its parts do not add up: say why
        deployments[dname] = {
            "circuit_id": head.circuit_id,
            "state": f"unreadable: {view.unreadable[deployment_topic(dname)]}",
            "inputs": list(head.inputs) if isinstance(head.inputs, tuple) else [],
            "output": head.output,
            "hosts": {},
            "gates": {},
        }
    for found, why in sorted(view.unreadable.items()):  # a head that is not even a valid message
        dname = last_level(found)
        if found == deployment_topic(dname) and dname not in view.heads:
            deployments[dname] = {
                "circuit_id": "",
                "state": f"unreadable: {why}",
                "inputs": [],
                "output": "",
                "hosts": {},
                "gates": {},
            }
    hosts = {}
    for hname, presence in sorted(view.hosts.items()):
        current = [d for d in view.deployments.values() if d.hosts.get(hname) == presence.incarnation]
        hosts[hname] = {
            "state": presence.state,
            "reason": presence.reason,
            "incarnation": presence.incarnation,
            "machine": presence.machine,
            "pid": presence.pid,
            "gates": sum(len(d.gates_on(hname)) for d in current),
        }
    return {"hosts": hosts, "deployments": deployments}


def print_cluster(state: dict[str, Any], name: str | None, broker: BrokerAddress) -> None:
    """The hosts, the deployments and, when `name` is given, that deployment's gates, as tables."""
    hosts = Table(title=f"gate hosts on {broker}", title_justify="left", show_edge=False)
    for column in ("host", "state", "incarnation", "machine", "pid", "gates"):
        hosts.add_column(column)
    for hname, h in state["hosts"].items():
        label = h["state"] + (f" ({h['reason']})" if h["reason"] else "")
        colour = "green" if h["state"] == "online" else "red"
        count = str(h["gates"]) if h["state"] == "online" or not h["gates"] else f"{h['gates']} lost"  # assigned, gone
        hosts.add_row(hname, f"[{colour}]{label}[/]", h["incarnation"], h["machine"], str(h["pid"]), count)
    out.print(hosts if state["hosts"] else "no gate hosts have announced themselves")
    out.print()
    deployments = Table(title="deployments", title_justify="left", show_edge=False)
    for column in ("deployment", "state", "gates", "hosts", "inputs -> output"):
        deployments.add_column(column)
    for dname, d in state["deployments"].items():
        spread = ", ".join(f"{h}: {n}" for h, n in d["hosts"].items())
        deployments.add_row(
            dname, d["state"], str(len(d["gates"])), spread, f"{', '.join(d['inputs'])} -> {d['output']}"
        )
    out.print(deployments if state["deployments"] else "no deployments")
    if name is None:
        return
    assert name in state["deployments"], "status checks the name first"
    out.print()
    gates = Table(title=f"gates of {name}", title_justify="left", show_edge=False)
    for column in ("gate", "op", "host", "state"):
        gates.add_column(column)
    for gate, g in state["deployments"][name]["gates"].items():
        gates.add_row(gate, g["op"], g["host"], g["state"])
    out.print(gates)
