"""`gatemesh`: compile expressions into circuits of gate actors and run them over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.security import ORCHESTRATOR_USER, SecureDir, host_user
from gates.faults import Faults
from gates.host import Connections, GateHost, HostNameTaken, default_name
from gates.mqtt311 import QoS
from gates.protocol import Message
from gates.transport import BrokerAddress
from orchestrator.api import broker_url, deployed
from orchestrator.circuit import Circuit
from orchestrator.cli_draw import draw_app, export_app
from orchestrator.cli_serve import serve
from orchestrator.cluster import ClusterView, DeploymentRecord, read_cluster
from orchestrator.compiler import compile_source
from orchestrator.deploy import HostChoice, deploy_to_hosts, in_process, on_deployment, on_hosts, undeploy
from orchestrator.errors import BrokerError, GatemeshError, InputError, unwrap
from orchestrator.examples import EXAMPLES
from orchestrator.explain import Explainer
from orchestrator.placement import STRATEGIES
from orchestrator.recorder import Recorder, explain_to
from orchestrator.result import RunResult
from orchestrator.runner import Observer, Runner

app = typer.Typer(
    help="Backpropagation as a distributed system: every gate an actor, every value an MQTT message.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        envvar="GATEMESH_BROKER",
        help="mqtt://host:port of a running broker; default: start the embedded one",
    ),
]
ClusterBrokerOption = Annotated[
    str,
    typer.Option("--broker", "-b", envvar="GATEMESH_BROKER", help="mqtt://host:port of the broker the hosts use"),
]
FaultsOption = Annotated[
    str,
    typer.Option(
        "--faults", help="inject faults between the gates and the broker: drop=0.05,dup=0.1,delay=0-20ms,reorder,seed=7"
    ),
]
SecureOption = Annotated[
    Path | None,
    typer.Option(
        "--secure",
        help="a directory made by `gatemesh secure init`: rewrite the broker's ACL for this deployment "
        "and connect with the orchestrator's account",
    ),
]
HostsOption = Annotated[
    str | None,
    typer.Option(
        "--hosts",
        help="gate hosts to deploy on: a number (wait for that many) or names h1,h2; default: all online",
    ),
]
PlacementOption = Annotated[
    str,
    typer.Option("--placement", help=f"{' | '.join(STRATEGIES)} | a .json/.yaml file mapping gate -> host"),
]
OutputOption = Annotated[str | None, typer.Option("--output", help="the name whose value is the output")]


def load_circuit(source: str, output: str | None = None) -> Circuit:
    """A circuit file (.json/.yaml/.yml) if SOURCE names one, else an expression or program."""
    if source.endswith((".json", ".yaml", ".yml")):
        circuit = Circuit.load(Path(source))
        if output is not None and output != circuit.output:
            raise InputError("--output applies to expressions; a circuit file names its own output")
        return circuit
    return compile_source(source, output=output)


def parse_assignments(assignments: list[str]) -> dict[str, float]:
    """['x=-2', 'y=5'] -> {'x': -2.0, 'y': 5.0}, with errors that name the bad argument."""
    values: dict[str, float] = {}
    for text in assignments:
        name, sep, number = text.partition("=")
        if not sep or not name.strip():
            raise InputError(f"{text!r}: give inputs as name=value, like x=-2")
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"{text!r}: {number!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{text!r}: the value must be finite")
        values[name.strip()] = value
    return values


def show(result: RunResult, title: str | None = None) -> None:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("input")
    table.add_column("gradient", justify="right")
    for name, grad in result.grads.items():
        table.add_row(name, f"{grad:.10g}")
    out.print(f"value = [bold]{result.value:.10g}[/bold]")
    out.print(table)


@app.command()
def run(
    source: Annotated[
        str | None, typer.Argument(help="an expression, a program (q = x + y; f = q * z) or a circuit file")
    ] = None,
    assignments: Annotated[list[str] | None, typer.Argument(help="input values: x=-2 y=5 z=-4")] = None,
    broker: BrokerOption = None,
    output: OutputOption = None,
    timeout: Annotated[float, typer.Option(help="seconds before a run fails, naming the gates it waits on")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help='print only {"value": ..., "grads": {...}}')] = False,
    deployed_name: Annotated[
        str | None, typer.Option("--deployed", help="run on this deployment (see `gatemesh deploy`); no SOURCE")
    ] = None,
    hosts: HostsOption = None,
    placement: PlacementOption = "round-robin",
    explain: Annotated[
        bool, typer.Option("--explain", help="tell every message of the run as it crosses the broker")
    ] = False,
    faults: FaultsOption = "",
    retries: Annotated[int, typer.Option(min=0, help="run again (fresh run id) after a timeout, this many times")] = 0,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="record every event of the run, with logical clocks, to this file")
    ] = None,
) -> None:
    """Run one forward and backward pass through the broker and print the value and gradients.

    The gates run as actors in this process, or, with --hosts, on gate hosts for the length
    of the run, or, with --deployed NAME, on a deployment that stays up.
    """
    given = [source] if source is not None else []
    given += assignments or []
    fault_plan = _faults(faults)
    if fault_plan is not None and (deployed_name is not None or hosts is not None):
        raise InputError("--faults applies to gates in this process; give hosts their own (gatemesh host --faults)")
    target: Circuit | str
    if deployed_name is not None:
        if hosts is not None:
            raise InputError("--deployed runs where the deployment already is; drop --hosts")
        target = deployed_name
        inputs = parse_assignments(given)
    else:
        if not given:
            raise InputError("give an expression, a program or a circuit file (or --deployed NAME)")
        target = load_circuit(given[0], output)
        inputs = parse_assignments(given[1:])
    console = err if as_json else out

    def narrate(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    recorder = Recorder(faults=fault_plan, faults_text=faults) if trace or explain else None
    if recorder is not None and explain:
        explain_to(recorder, narrate)

    async def one_run() -> RunResult:
        async with _runner(target, broker, hosts, placement, timeout, None, fault_plan, recorder) as runner:
            try:
                return await runner.run(inputs, timeout=timeout, retries=retries)
            finally:
                if recorder is not None and trace is not None:
                    await recorder.drain()
                    recorder.write(trace)

    result = asyncio.run(one_run())
    if as_json:
        print(result.model_dump_json())
    else:
        show(result)


@contextlib.asynccontextmanager
async def _runner(
    target: Circuit | str,
    broker: str | None,
    hosts: str | None,
    placement: str,
    timeout: float,
    narrate: Callable[[str], None] | None,
    faults: Faults | None = None,
    recorder: Recorder | None = None,
) -> AsyncIterator[Runner]:
    """A runner on a named deployment, on hosts for this run only, or on actors in this process."""

    def per_deployment(record: DeploymentRecord) -> Observer:
        assert narrate is not None
        return _narrator(narrate, record.circuit, record.placement)

    observer_for = per_deployment if narrate else None
    if isinstance(target, str):
        address = _address(broker or DEFAULT_BROKER)
        opened = on_deployment(target, address, ready_timeout=timeout, observer=observer_for, recorder=recorder)
        async with opened as runner:
            yield runner
    elif hosts is not None:
        address = _address(broker or DEFAULT_BROKER)
        choice = _host_choice(hosts)
        placed = on_hosts(
            target,
            address,
            hosts=choice,
            placement=placement,
            observer=observer_for,
            timeout=timeout,
            recorder=recorder,
        )
        async with placed as runner:
            yield runner
    else:
        observer = _narrator(narrate, target) if narrate else None
        async with (
            broker_url(broker) as address,
            in_process(target, address, observer=observer, faults=faults, recorder=recorder) as runner,
        ):
            yield runner


def _narrator(narrate: Callable[[str], None], circuit: Circuit, placement: dict[str, str] | None = None) -> Observer:
    """An observer that tells every message of a run as a sentence."""
    explainer = Explainer(circuit, placement)

    def observe(topic_name: str, message: Message) -> None:
        narrate(explainer.explain(topic_name, message))

    return observe


def _faults(text: str) -> Faults | None:
    if not text:
        return None
    try:
        return Faults.parse(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _address(url: str, accounts: SecureDir | None = None) -> BrokerAddress:
    """The broker's address; with a secure directory and no user in the URL, as the orchestrator."""
    try:
        address = BrokerAddress.parse(url)
    except ValueError as exc:
        raise BrokerError(str(exc)) from exc
    if accounts is not None and address.username is None:
        credentials = accounts.credentials()
        address = address.model_copy(update={"username": ORCHESTRATOR_USER, "password": credentials[ORCHESTRATOR_USER]})
    return address


def _secure_dir(directory: Path | None) -> SecureDir | None:
    if directory is None:
        return None
    accounts = SecureDir(directory)
    try:
        accounts.credentials()
    except ValueError as exc:
        raise InputError(f"--secure: {exc}; make one with `gatemesh secure init`") from exc
    return accounts


app.add_typer(draw_app, name="draw")
app.command("serve")(serve)
app.add_typer(export_app, name="export")
secure_app = typer.Typer(help="Accounts and an ACL for Mosquitto: each host may touch only its own gates' topics.")
app.add_typer(secure_app, name="secure")


@secure_app.command("init")
def secure_init(
    directory: Annotated[Path, typer.Argument(help="where to write credentials.json, passwd and acl")],
    hosts: Annotated[str, typer.Option("--hosts", help="the gate hosts' names: h1,h2,h3")],
) -> None:
    """Make accounts for the orchestrator and each host, a password file and a first ACL."""
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names:
        raise InputError("--hosts: give the hosts' names, like h1,h2,h3")
    accounts = SecureDir.create(directory, names)
    lines = [
        f"wrote {directory}/credentials.json (keep it secret), passwd and acl for {', '.join(names)}",
        f"broker:   python -m broker mosquitto --port 1883 --secure {directory}",
        *(
            f"host {name}: gatemesh host --name {name} --broker {accounts.url(host_user(name), 'mqtt://HOST:1883')}"
            for name in names
        ),
        f"deploy:   gatemesh deploy CIRCUIT --name NAME --secure {directory} --broker mqtt://HOST:1883",
    ]
    for line in lines:
        out.print(line, soft_wrap=True, highlight=False)


def _host_choice(hosts: str | None) -> HostChoice:
    if hosts is None:
        return None
    if hosts.strip().isdigit():
        count = int(hosts)
        if count < 1:
            raise InputError("--hosts: give at least 1")
        return count
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    if not names:
        raise InputError("--hosts: give a number or host names like h1,h2")
    return names


@app.command()
def deploy(
    source: Annotated[str, typer.Argument(help="an expression, a program or a circuit file")],
    name: Annotated[str, typer.Option("--name", help="the deployment's name, used by run --deployed and undeploy")],
    hosts: HostsOption = None,
    placement: PlacementOption = "round-robin",
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    output: OutputOption = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the hosts and for every gate to be ready")] = 30.0,
    secure: SecureOption = None,
) -> None:
    """Place a circuit's gates on live gate hosts and wait until every gate is ready."""
    circuit = load_circuit(source, output)
    accounts = _secure_dir(secure)
    address = _address(broker, accounts)
    started = time.perf_counter()
    record = asyncio.run(
        deploy_to_hosts(
            circuit, name, address, hosts=_host_choice(hosts), placement=placement, timeout=timeout, secure=accounts
        )
    )
    elapsed = time.perf_counter() - started
    per_host = Counter(record.placement.values())
    spread = ", ".join(f"{host}: {per_host[host]}" for host in record.hosts)
    out.print(
        f"deployed {record.name} ({record.circuit_id}): {len(record.placement)} gates on {len(record.hosts)} "
        f"host(s) ({spread}), all ready in {elapsed:.2f} s",
        highlight=False,
        soft_wrap=True,
    )


@app.command("undeploy")
def undeploy_command(
    name: Annotated[str, typer.Argument(help="the deployment's name")],
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    secure: SecureOption = None,
) -> None:
    """Delete a deployment (its retained messages too); its hosts stop its gates."""
    accounts = _secure_dir(secure)
    record = asyncio.run(undeploy(name, _address(broker, accounts), secure=accounts))
    out.print(f"undeployed {record.name}: {len(record.placement)} gates on {', '.join(record.hosts)}", highlight=False)


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="show this deployment's gates too")] = None,
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
) -> None:
    """List the gate hosts, the deployments and (for one deployment) its gates, with their state."""
    address = _address(broker)
    try:
        view = asyncio.run(read_cluster(address, with_ready=True))
    except Exception as exc:
        raise BrokerError(f"cannot read the cluster's state from {address}: {exc}") from exc
    if as_json:
        print(json.dumps(cluster_state(view), indent=2))
        return
    show_cluster(view, name, address)


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
        deployments[dname] = {
            "circuit_id": record.circuit_id,
            "state": state,
            "inputs": record.circuit.inputs,
            "output": record.circuit.output,
            "hosts": dict(Counter(record.placement.values())),
            "gates": gates,
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


def show_cluster(view: ClusterView, name: str | None, broker: BrokerAddress) -> None:
    state = cluster_state(view)
    hosts = Table(title=f"gate hosts on {broker}", title_justify="left", show_edge=False)
    for column in ("host", "state", "incarnation", "machine", "pid", "gates"):
        hosts.add_column(column)
    for hname, h in state["hosts"].items():
        label = h["state"] + (f" ({h['reason']})" if h["reason"] else "")
        colour = "green" if h["state"] == "online" else "red"
        hosts.add_row(hname, f"[{colour}]{label}[/]", h["incarnation"], h["machine"], str(h["pid"]), str(h["gates"]))
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
    if name not in state["deployments"]:
        raise InputError(f"no deployment named {name!r} (deployments: {', '.join(state['deployments']) or 'none'})")
    out.print()
    gates = Table(title=f"gates of {name}", title_justify="left", show_edge=False)
    for column in ("gate", "op", "host", "state"):
        gates.add_column(column)
    for gate, g in state["deployments"][name]["gates"].items():
        gates.add_row(gate, g["op"], g["host"], g["state"])
    out.print(gates)


@app.command()
def host(
    broker: ClusterBrokerOption = DEFAULT_BROKER,
    name: Annotated[str | None, typer.Option("--name", help="this host's name; default: <hostname>-<pid>")] = None,
    faults: FaultsOption = "",
    connections: Annotated[
        str, typer.Option(help="shared: one MQTT connection for all this host's gates; per-gate: one each")
    ] = "shared",
    qos: Annotated[
        int, typer.Option(min=0, max=1, help="1: gate messages at least once; 0: at most once (shared connections)")
    ] = 1,
) -> None:
    """Run a gate host: it runs whatever gates deployments assign to it (same as `python -m gates`)."""
    from gates.__main__ import run_host

    try:
        if connections not in ("shared", "per-gate"):
            raise InputError("--connections: shared or per-gate")
        mode: Connections = "shared" if connections == "shared" else "per-gate"
        level: QoS = 0 if qos == 0 else 1
        gate_host = GateHost(
            name or default_name(), _address(broker), faults=_faults(faults), connections=mode, qos=level
        )
    except ValidationError as exc:  # the name, which the host's presence message validates
        raise InputError(f"--name: {exc}") from exc
    except ValueError as exc:  # --qos and --connections that do not go together
        raise InputError(str(exc)) from exc
    logging.getLogger("gates").setLevel(logging.INFO)
    try:
        asyncio.run(run_host(gate_host))
    except HostNameTaken as exc:
        raise InputError(str(exc)) from exc


@app.command("compile")
def compile_command(
    source: Annotated[str, typer.Argument(help="an expression or a program")],
    output_file: Annotated[Path, typer.Option("-o", "--out", help="where to write the circuit (.json, .yaml)")],
    output: OutputOption = None,
    name: Annotated[str, typer.Option(help="the circuit's name")] = "circuit",
) -> None:
    """Compile SOURCE into a circuit file that `gatemesh run FILE` runs."""
    circuit = compile_source(source, output=output, name=name)
    circuit.dump(output_file)
    err.print(f"wrote {len(circuit.gates)} gates to {output_file} (inputs: {', '.join(circuit.inputs)})")


@app.command()
def demo(broker: BrokerOption = None, timeout: float = 10.0) -> None:
    """Run the CS231n notes' worked examples through the mesh, one after another."""

    async def all_examples() -> None:
        async with broker_url(broker) as url:
            out.print(f"broker: {url}\n")
            for number, example in enumerate(EXAMPLES, 1):
                circuit = compile_source(example.source)
                async with deployed(circuit, url) as runner:
                    result = await runner.run(example.inputs, timeout=timeout)
                source = "; ".join(line.strip() for line in example.source.strip().splitlines())
                given = ", ".join(f"{k}={v:g}" for k, v in example.inputs.items())
                out.rule(f"{number}. {example.title}")
                out.print(f"[cyan]{source}[/cyan]   at {given}")
                out.print(
                    f"{len(circuit.gates)} gate actors, {circuit.messages_per_pass()} messages through the broker"
                )
                show(result)
                out.print(f"[dim]{example.lesson}[/dim]\n")

    asyncio.run(all_examples())


def fail(exc: GatemeshError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise SystemExit(1) from None


def main() -> None:
    """Entry point: gatemesh errors become one clear line on stderr and exit status 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except GatemeshError as exc:
        fail(exc)
    except BaseExceptionGroup as group:
        cause = unwrap(group)
        if not isinstance(cause, GatemeshError):
            raise
        fail(cause)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
