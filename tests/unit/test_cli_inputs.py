"""What the CLI makes of SOURCE and of name=value arguments, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gates.protocol import HostPresence
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.cli_cluster import cluster_state, print_cluster
from orchestrator.cli_common import check_writable, host_choice, load_circuit, parse_assignments
from orchestrator.cluster import ClusterView
from orchestrator.errors import InputError
from orchestrator.records import DeploymentRecord
from tests.processes import gatemesh


def test_input_names_are_read_as_python_reads_the_expressions_names() -> None:
    """Python normalises an identifier (NFKC): the fullwidth x of `\\uff58+1` is the input x."""
    circuit = load_circuit("\uff58+1")
    assert circuit.inputs == ["x"]
    assert parse_assignments(["\uff58=1"]) == {"x": 1.0}


def test_a_file_without_a_circuit_suffix_is_not_read_as_an_expression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cf").mkdir()
    (tmp_path / "cf" / "ok").write_text('{"gates": []}')
    (tmp_path / "circuit.txt").write_text('{"gates": []}')
    for source in ("cf/ok", "circuit.txt"):
        with pytest.raises(InputError, match=rf"^{source}: a circuit file's name ends in \.json, \.yaml, \.yml$"):
            load_circuit(source)
    with pytest.raises(InputError, match=r"^cf/: a directory; give a circuit file \(\.json, \.yaml"):
        load_circuit("cf/")
    with pytest.raises(InputError, match=r"^neuron\.jsn: no such circuit file \(its name would end in .*\); line 1"):
        load_circuit("neuron.jsn")  # mistyped: it was read as the expression neuron.jsn (unsupported syntax)
    assert load_circuit("cf/x").inputs == ["cf", "x"]  # no such file: an expression, cf / x
    assert len(load_circuit("x*0.5+" * 60 + "y").inputs) == 2  # too long a name for a file: an expression


def test_an_assignment_the_output_never_reads_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    circuit = load_circuit("r = w * 2; y = x * 3")
    assert circuit.output == "y"
    assert capsys.readouterr().err.splitlines() == [
        "warning: line 1, column 1: the value given to r here is never read by the output (y); its gates are left out",
        "warning: w stays an input, with gradient 0",
    ]


def test_a_file_to_write_is_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^--trace .*: a directory; give the name of a file to write$"):
        check_writable("--trace", tmp_path)
    with pytest.raises(InputError, match=r"^-o .*c\.png: write it as \.svg$"):
        check_writable("-o", tmp_path / "c.png", (".svg",))
    with pytest.raises(InputError, match=r"^--trace .*qf-circuit\.svg: write it as \.jsonl$"):
        check_writable("--trace", tmp_path / "qf-circuit.svg", (".jsonl",))
    with pytest.raises(InputError, match=r"cannot write in .*missing.* \(missing, or not writable\)"):
        check_writable("-o", tmp_path / "missing" / "c.svg", (".svg",))
    check_writable("-o", tmp_path / "c.svg", (".svg",))


def test_a_trace_given_as_a_circuit_says_how_to_draw_it(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    trace.write_text("{}\n")
    with pytest.raises(
        InputError, match=r"run\.jsonl: a trace, not a circuit; `gatemesh draw circuit --trace .*run\.jsonl`"
    ):
        load_circuit(str(trace))


def test_compile_writes_a_circuit_file_in_the_other_format(tmp_path: Path) -> None:
    as_json, as_yaml = tmp_path / "neuron.json", tmp_path / "neuron.yaml"
    assert gatemesh("compile", "sigmoid(w0*x0 + w1*x1 + w2)", "-o", str(as_json)).returncode == 0
    converted = gatemesh("compile", str(as_json), "-o", str(as_yaml))
    assert converted.returncode == 0, converted.stderr
    assert Circuit.load(as_yaml) == Circuit.load(as_json)
    renamed = gatemesh("compile", str(as_json), "-o", str(as_yaml), "--name", "other")
    assert renamed.stderr.strip() == "error: --name applies to expressions; a circuit file names its own circuit"


def test_a_deployment_keeps_its_output() -> None:
    """`--output q` on a deployed run printed f's value and exit 0: a deployment's output is fixed."""
    done = gatemesh("run", "--deployed", "qf", "x=1", "y=2", "z=3", "--output", "q")
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "error: --output: a deployment keeps the output it was deployed with; drop --output",
    )


def test_a_placement_without_hosts_is_refused_not_ignored() -> None:
    """`run --placement by-layer` without --hosts ran in this process, the placement unsaid."""
    for chosen in ("by-layer", "round-robin"):  # the default named too
        alone = gatemesh("run", "x*y", "x=1", "y=2", "--placement", chosen)
        assert (alone.returncode, alone.stdout) == (1, "")
        assert alone.stderr == "error: --placement places gates on gate hosts: give --hosts too\n"
    deployed = gatemesh("run", "--deployed", "qf", "x=1", "--placement", "by-layer")
    assert deployed.stderr == (
        "error: --placement: a deployment keeps the placement it was deployed with; drop --placement\n"
    )


def test_hosts_takes_a_count_or_names_and_a_negative_count_is_no_name() -> None:
    """--hosts -2 was read as a host named "-2", and then waited for in vain."""
    assert host_choice("2") == 2
    assert host_choice("h1, h2") == ["h1", "h2"]
    for wrong in ("0", "-2", "+0"):
        with pytest.raises(InputError, match="--hosts: give at least 1"):
            host_choice(wrong)


def test_status_counts_an_offline_hosts_gates_as_lost(capsys: pytest.CaptureFixture[str]) -> None:
    """An offline host showed "2" gates, as if they ran."""
    host = {"state": "offline", "reason": "stopped", "incarnation": "ab12cd34", "machine": "m", "pid": 7, "gates": 2}
    alive = {**host, "state": "online", "reason": ""}
    print_cluster({"hosts": {"h3": host, "h1": alive}, "deployments": {}}, None, BrokerAddress(host="b", port=1883))
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(" h")}
    assert rows["h3"][-2:] == ["2", "lost"]
    assert rows["h1"][-1] == "2"


def test_status_marks_a_deployment_made_for_one_run() -> None:
    """`run --hosts` and the page's runs on hosts deploy for one run: status says so, and only of those."""
    circuit = load_circuit("x * y")
    placement = {gate.id: "h1" for gate in circuit.gates}
    kept = DeploymentRecord(
        name="kept", circuit_id="kept.0badcafe", circuit=circuit, placement=placement, hosts={"h1": "ab12cd34"}
    )
    one_run = kept.model_copy(update={"name": "one-run", "circuit_id": "one-run.0badcafe", "transient": True})
    online = HostPresence(host="h1", incarnation="ab12cd34", state="online")
    view = ClusterView(
        hosts={"h1": online},
        deployments={"kept": kept, "one-run": one_run},
        ready={"kept.0badcafe": set(placement), "one-run.0badcafe": set(placement)},
    )
    states = {name: found["state"] for name, found in cluster_state(view)["deployments"].items()}
    assert states == {"kept": "ready", "one-run": "ready (made for one run)"}
