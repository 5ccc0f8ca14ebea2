"""Traces of real runs over Mosquitto, and the pictures and logs made from them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from gates.faults import Faults
from gates.protocol import BROKER, ORCHESTRATOR
from gates.trace_records import TraceEvent
from gates.transport import BrokerAddress, client
from orchestrator.api import run_circuit
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, in_process, on_deployment, undeploy
from orchestrator.errors import HostLost, RunError
from orchestrator.explain import numbered
from orchestrator.recorder import Recorder
from orchestrator.reference import evaluate
from orchestrator.result import RunResult
from orchestrator.trace import (
    Trace,
    TraceError,
    as_sent,
    dump_lines,
    dumps_msg,
    parse_trace,
    read_trace,
    write_trace,
)
from tests.processes import GateHostProcess, clean_env, gatemesh
from tests.shiviz_rules import validate
from tests.tasks import cancelled, caught
from tests.unit.test_reference import NEURON, NEURON_GRADS
from viz.caption import caption
from viz.circuit import draw_circuit, state_at, step_of_message
from viz.lamport import COLUMN, draw_lamport
from viz.shiviz import export
from viz.svg import DrawError

pytestmark = pytest.mark.integration

QF = "(x+y)*z"
QF_INPUTS = {"x": -2.0, "y": 5.0, "z": -4.0}
QF_RESULT = RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})
FAULTS = "drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=0"
SVG = "{http://www.w3.org/2000/svg}"


async def traced(source: str, inputs: dict[str, float], url: str, faults: str = "") -> Trace:
    """One traced in-process run; a run the faults break still leaves its trace."""
    plan = Faults.parse(faults) if faults else None
    recorder = Recorder(faults=plan, faults_text=faults)
    with contextlib.suppress(RunError):
        await run_circuit(source, inputs, broker=url, trace=recorder, faults=plan, timeout=1.0)
    return recorder.trace()


def by_class(svg: str, css: str) -> list[ET.Element]:
    """Every element whose class list includes every word of `css`."""
    wanted = set(css.split())
    return [e for e in ET.fromstring(svg).iter() if wanted <= set(e.get("class", "").split())]


def texts(svg: str, css: str) -> list[str]:
    """The words of every <text> of class `css` (a hover <title> inside it is not its words)."""
    found = [e for e in by_class(svg, css) if e.tag == f"{SVG}text"]
    return [((e.text or "") + "".join(child.tail or "" for child in e)).strip() for e in found]


def messages(trace: Trace, kind: str) -> dict[str, list[TraceEvent]]:
    found: dict[str, list[TraceEvent]] = {}
    for e in trace.events:
        if e.type == kind and e.msg is not None:
            found.setdefault(e.msg.id, []).append(e)
    return found


def test_the_trace_of_the_notes_circuit(mosquitto_url: str, tmp_path: Path) -> None:
    trace = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url))
    sends, crossings, receipts = messages(trace, "send"), messages(trace, "cross"), messages(trace, "receive")
    assert len(sends) == len(crossings) == len(receipts) == 16
    assert all(len(sends[i]) == len(crossings[i]) == len(receipts[i]) == 1 for i in sends)
    carried: Counter[tuple[str, str, str, float | None]] = Counter()
    for msg_id, (send,) in sends.items():
        (receipt,) = receipts[msg_id]
        assert send.msg is not None
        assert receipt.msg is not None
        assert receipt.node in send.msg.dest
        assert receipt.msg == send.msg
        assert receipt.lamport > send.lamport
        assert all(count <= receipt.vc.get(node, 0) for node, count in send.vc.items()), (send, receipt)
        # the broker's copy to the orchestrator may arrive after the receiver's: no order between those two
        assert send.seq < crossings[msg_id][0].seq
        assert send.seq < receipt.seq
        number = send.msg.value if send.msg.value is not None else send.msg.grad
        carried[(send.msg.phase, send.node, receipt.node, number)] += 1
    o = ORCHESTRATOR
    assert carried == Counter(
        {
            ("feed", o, "x", -2.0): 1,
            ("feed", o, "y", 5.0): 1,
            ("feed", o, "z", -4.0): 1,
            ("forward", "x", "add_1", -2.0): 1,
            ("forward", "y", "add_1", 5.0): 1,
            ("forward", "z", "f", -4.0): 1,
            ("forward", "add_1", "f", 3.0): 1,
            ("forward", "f", o, -12.0): 1,
            ("backward", o, "f", 1.0): 1,
            ("backward", "f", "add_1", -4.0): 1,
            ("backward", "f", "z", 3.0): 1,
            ("backward", "add_1", "x", -4.0): 1,
            ("backward", "add_1", "y", -4.0): 1,
            ("report", "x", o, -4.0): 1,
            ("report", "y", o, -4.0): 1,
            ("report", "z", o, 3.0): 1,
        }
    )
    for node in {e.node for e in trace.events} - {BROKER}:  # each node's clocks only ever grow
        mine = [e for e in trace.events if e.node == node]
        assert [e.vc[node] for e in mine] == list(range(1, len(mine) + 1))
        assert all(a.lamport < b.lamport for a, b in itertools.pairwise(mine))
    assert trace.replay() == QF_RESULT
    computes = {e.node: e for e in trace.events if e.type == "compute" and e.inputs is not None}
    assert (computes["add_1"].inputs, computes["add_1"].value) == ((-2.0, 5.0), 3.0)
    assert (computes["f"].inputs, computes["f"].value) == ((3.0, -4.0), -12.0)

    path = tmp_path / "qf.jsonl"
    write_trace(trace, path)
    assert read_trace(path) == trace

    circuit_svg = draw_circuit(trace.circuit, state_at(trace))
    assert sorted(texts(circuit_svg, "value")) == sorted(["-2.00", "5.00", "-4.00", "3.00", "-12.00"])
    assert sorted(texts(circuit_svg, "grad")) == sorted(["-4.00", "-4.00", "3.00", "-4.00", "1.00"])
    lamport_svg = draw_lamport(trace)
    assert lamport_svg == draw_lamport(read_trace(path))  # a function of the trace alone
    arrows = {kind: len(by_class(lamport_svg, f"msg {kind}")) for kind in ("feed", "forward", "backward", "report")}
    assert arrows == {"feed": 3, "forward": 5, "backward": 5, "report": 3}
    forward_values = [
        t for g in by_class(lamport_svg, "arrow forward") for t in texts(ET.tostring(g, "unicode"), "value")
    ]
    assert sorted(forward_values) == sorted(["-2.00", "5.00", "-4.00", "3.00", "-12.00"])
    assert all(g.find(f"{SVG}title") is not None for g in by_class(lamport_svg, "arrow"))
    assert validate(export([("qf", trace)]))  # ShiViz would open it


def test_step_shows_only_what_was_delivered(mosquitto_url: str) -> None:
    trace = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url))
    (into_f,) = [e for e in trace.events if e.type == "receive" and e.node == "f" and e.msg and e.msg.src == "add_1"]
    before = state_at(trace, step=into_f.seq - 1)
    after = state_at(trace, step=into_f.seq)
    assert "add_1" not in before.values
    assert after.values["add_1"] == 3.0
    svg = draw_circuit(trace.circuit, after)
    assert "3.00" in texts(svg, "value")
    assert "-12.00" not in texts(svg, "value")
    assert set(texts(svg, "grad")) == {""}  # blank, never 0, until a backward message is delivered
    assert draw_circuit(trace.circuit, state_at(trace, step=0)).count('class="value"') == 5


def test_a_gate_reading_one_input_twice_shows_each_part_on_its_own_branch(mosquitto_url: str) -> None:
    trace = asyncio.run(traced("f = x * x", {"x": 3}, mosquitto_url))
    svg = draw_circuit(trace.circuit, state_at(trace))
    assert texts(svg, "grad part") == ["3.00", "3.00"]  # d(x*x)/dx through each input: x, not x + x
    assert sorted(texts(svg, "grad")) == ["1.00", "3.00", "3.00", "6.00"]  # the parts, and their sum at the fork


def test_same_circuit_same_numbers_same_figure(mosquitto_url: str) -> None:
    first = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url))
    second = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url))
    assert draw_circuit(first.circuit, state_at(first)) == draw_circuit(second.circuit, state_at(second))


FAULT_TYPES = ("drop", "duplicate", "delay", "reorder", "timeout")


def test_faults_are_in_the_trace_and_the_picture(mosquitto_url: str) -> None:
    """Each gate's injector is seeded with (seed, gate): tries seeds until a run shows every kind
    of fault (a run shows all with probability ~0.6 on an idle machine, less on a loaded one, where
    the 1 s timeout can end a run before its faults)."""
    for seed in range(40):
        trace = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url, FAULTS.replace("seed=0", f"seed={seed}")))
        if set(FAULT_TYPES) <= {e.type for e in trace.events}:
            break
    else:
        pytest.fail(f"no run in 40 showed all of {FAULT_TYPES}")
    assert any(e.type == "receive" and e.note == "duplicate" for e in trace.events)
    svg = draw_lamport(trace)
    for css in ("msg drop", "drop-mark", "msg duplicate", "msg delayed", "fault reorder", "timeout"):
        assert by_class(svg, css), css
    assert svg == draw_lamport(parse_trace("\n".join(dump_lines(trace))))  # deterministic: the trace decides
    dropped = {e.msg.id for e in trace.events if e.type == "drop" and e.msg}
    assert not any(e.type == "receive" and e.msg and e.msg.id in dropped for e in trace.events)
    (timeout,) = [e for e in trace.events if e.type == "timeout"]
    probes = [e for e in trace.events if e.type == "send" and e.msg and e.msg.phase == "probe"]
    assert probes[0].lamport == timeout.lamport + 1  # the orchestrator probes right after its timeout
    control = {e.msg.id for e in trace.events if e.type == "send" and e.msg and e.msg.phase in ("probe", "release")}
    crossed = {e.msg.id for e in trace.events if e.type == "cross" and e.msg}
    assert len(control) >= 2
    assert control <= crossed  # the control topic crosses the broker too
    assert validate(export([("faulty", trace)]))


def fault_choices(trace: Trace) -> dict[str, list[tuple[object, ...]]]:
    """What each gate's injector did, in the gate's order (message ids hold Lamport numbers, which
    depend on the order copies arrive in: left out)."""
    choices: dict[str, list[tuple[object, ...]]] = {}
    for e in trace.events:
        if e.type in ("drop", "duplicate", "delay") and e.msg is not None:
            choices.setdefault(e.node, []).append((e.type, e.msg.phase, e.msg.port, e.msg.dest, e.delay_ms, e.note))
        elif e.type == "reorder":
            choices.setdefault(e.node, []).append((e.type, len(e.order or ())))
    return choices


def test_a_seeded_faulty_run_makes_the_same_choices_again(mosquitto_url: str) -> None:
    """Two deployments, one seed: every gate drops, duplicates and delays the same messages by the
    same amounts (no drops here: a drop ends the run at a timeout, whose timing is the machine's)."""
    faults = "dup=0.5,delay=0-15ms,reorder,seed=3"
    first = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url, faults))
    second = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url, faults))
    assert first.header.deployment != second.header.deployment
    choices = fault_choices(first)
    assert sum(1 for made in choices.values() for c in made if c[0] == "duplicate") >= 1
    assert choices == fault_choices(second)
    copies = {e.msg.id: e.note for e in first.events if e.type == "duplicate" and e.msg is not None}
    delays = [e for e in first.events if e.type == "delay" and e.msg is not None]
    held = {e.msg.id for e in delays if e.msg is not None}
    assert held & set(copies), "a duplicated message held back"
    assert held - set(copies), "a single message held back"
    for e in delays:  # which copy is said of a duplicated message only
        assert e.msg is not None
        n = copies.get(e.msg.id, "").removesuffix(" copies")
        assert e.note == "" if not n else re.fullmatch(rf"copy [1-{n}] of {n}", e.note), (e.msg.id, e.note)
    other = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url, faults.replace("seed=3", "seed=4")))
    assert fault_choices(other) != choices


async def two_runs(url: str) -> Trace:
    circuit = compile_source("sigmoid(w0*x0 + w1*x1 + w2)")
    recorder = Recorder()
    async with in_process(circuit, BrokerAddress.parse(url), recorder=recorder) as runner:
        first = await runner.run(NEURON)
        second = await runner.run({name: -value for name, value in NEURON.items()})
        await recorder.drain()
    assert (first.value, first.grads) == (0.7310585786300049, NEURON_GRADS)
    assert second.value != first.value
    return recorder.trace()


def test_the_neuron_and_a_two_run_file_open_in_shiviz(mosquitto_url: str, tmp_path: Path) -> None:
    trace = asyncio.run(two_runs(mosquitto_url))
    assert len(trace.runs()) == 2
    path = tmp_path / "two.jsonl"
    write_trace(trace, path)
    single = asyncio.run(traced("sigmoid(w0*x0 + w1*x1 + w2)", NEURON, mosquitto_url))
    write_trace(single, tmp_path / "neuron.jsonl")
    done = gatemesh("export", "shiviz", str(tmp_path / "neuron.jsonl"), str(path), "-o", str(tmp_path / "runs.log"))
    assert done.returncode == 0, done.stderr
    executions = validate((tmp_path / "runs.log").read_text())
    assert len(executions) == 3
    assert next(trace.replay(run).value for run in trace.runs()) == 0.7310585786300049
    texts_ = [event for events in executions.values() for _, _, event in events]
    assert any(t.startswith("receive report") for t in texts_)
    assert any(t.startswith("compute forward") for t in texts_)


def test_explain_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    """`gatemesh run --explain | head -2`: the reader goes mid-run (on the embedded broker, in
    this process). rich's SystemExit from a line told in a callback tore the event loop down:
    some 70 lines of tracebacks on stderr."""
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "run", QF, "x=-2", "y=5", "z=-4"]
    with subprocess.Popen(
        [*command, "--explain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    ) as running:
        assert running.stdout is not None
        assert running.stderr is not None
        assert running.stdout.readline().strip() == "1. the orchestrator feeds input x = -2"
        running.stdout.close()  # what `head -1` does once it has its line
        said = running.stderr.read()
        assert running.wait(timeout=60) == 0
    assert said == ""


def test_json_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    """`gatemesh train --json | head -c 100`: the JSON went by print(), and click ended the command
    with status 1, saying nothing, whenever the reader had gone before it was all written."""
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
    command += ["train", "moons", "--engine", "reference", "--steps", "100", "--json"]
    for _ in range(3):  # the reader goes before the JSON is all written (some 20 KB of it)
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env()
        ) as running:
            assert running.stdout is not None
            assert running.stdout.read(10) == '{"steps": '
            running.stdout.close()
            assert running.wait(timeout=60) == 0


def test_explain_says_under_its_sentences_what_a_message_id_is(mosquitto_url: str) -> None:
    """A second copy is told by its message's id (x:4); the first id shown is explained once, under the sentences."""
    done = gatemesh("run", QF, "x=-2", "y=5", "z=-4", "--broker", mosquitto_url, "--faults", "dup=1", "--explain")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    notes = [i for i, line in enumerate(lines) if " names a message: its sender, " in line]
    assert len(notes) == 1, done.stdout
    note = re.fullmatch(
        r"\((\w+):(\d+)\) names a message: its sender, (\w+), and the Lamport clock of its send, (\d+)", lines[notes[0]]
    )
    assert note is not None, lines[notes[0]]
    assert note.group(1, 2) == note.group(3, 4)
    first = next(line for line in lines if re.search(r"\(\w+:\d+[,)]", line))
    assert f"({note.group(1)}:{note.group(2)})" in first  # the first id a sentence showed
    assert lines[notes[0] + 1].startswith("value = -12")  # under the sentences, above the result


def test_the_cli_traces_draws_and_explains(mosquitto_url: str, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    done = gatemesh("run", QF, "x=-2", "y=5", "z=-4", "--broker", mosquitto_url, "--trace", str(path), "--explain")
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stdout.splitlines() if line[:5].strip().rstrip(".").isdigit()]
    trace = read_trace(path)
    assert len(told) == len([e for e in trace.events if e.type == "cross"]) == 16  # one sentence per crossing
    assert trace.replay() == QF_RESULT
    for args in (["circuit", "--trace", str(path)], ["lamport", str(path)]):
        out = tmp_path / f"{args[0]}.svg"
        done = gatemesh("draw", *args, "-o", str(out))
        assert done.returncode == 0, done.stderr
        ET.fromstring(out.read_text())
    done = gatemesh("draw", "circuit", "--trace", str(path), "--step", "999", "-o", str(tmp_path / "x.svg"))
    assert done.returncode == 1
    assert "--step 999: the trace has 58 events" in done.stderr
    (tmp_path / "cut.jsonl").write_text("".join(path.read_text().splitlines(keepends=True)[:5]))  # `head -5`
    done = gatemesh("draw", "lamport", str(tmp_path / "cut.jsonl"), "-o", str(tmp_path / "cut.svg"))
    assert done.returncode == 0, done.stderr
    assert "finished (value -12), but this trace holds 0 of its 3 gradient reports: the file looks cut short" in (
        " ".join(done.stderr.split())
    )
    assert "cut short" not in gatemesh("draw", "lamport", str(path), "-o", str(tmp_path / "whole.svg")).stderr
    exported = gatemesh("export", "shiviz", str(tmp_path / "cut.jsonl"), "-o", str(tmp_path / "cut.log"))
    assert exported.returncode == 0, exported.stderr
    assert "the file looks cut short" in exported.stderr  # as the pictures say (it said nothing)
    # what a file that is not a trace seems to be, without the parser's words
    (tmp_path / "headless.jsonl").write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    assert gatemesh("export", "shiviz", str(path), "-o", str(tmp_path / "run.log")).returncode == 0
    for name, seems in (("headless.jsonl", "its first line is an event"), ("run.log", "but a ShiViz log")):
        done = gatemesh("draw", "lamport", str(tmp_path / name), "-o", str(tmp_path / "x.svg"))
        assert done.returncode == 1
        said = " ".join(done.stderr.split())
        assert seems in said, said
        assert "(line 1:" not in said, said
    (tmp_path / "bad.jsonl").write_text(path.read_text().replace('"lamport":', '"lamport":"x",', 1))
    done = gatemesh("export", "shiviz", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "x.log"))
    assert done.returncode == 1
    assert "line 2: not a trace event" in done.stderr
    (tmp_path / "circuit.json").write_text(compile_source(QF).model_dump_json(indent=2))
    done = gatemesh("draw", "lamport", str(tmp_path / "circuit.json"), "-o", str(tmp_path / "x.svg"))
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert (
        "circuit.json: not a trace but a circuit file; give its input values to run it once and draw that run" in said
    )
    assert "(x=... y=... z=...), or draw the circuit itself with `gatemesh draw circuit " in said


def test_both_draw_commands_take_a_trace_both_ways(tmp_path: Path) -> None:
    """`draw circuit --trace FILE` and `draw lamport FILE`: a student who types one form for the
    other gets the same picture, and inputs given with a trace are said to be the trace's."""
    qf = str(IMG / "qf.jsonl")
    for command in ("circuit", "lamport"):
        drawn = []
        for form in (["--trace", qf], [qf]):
            out = tmp_path / f"{command}-{len(form)}.svg"
            done = gatemesh("draw", command, *form, "-o", str(out))
            assert done.returncode == 0, done.stderr
            drawn.append(out.read_text())
        assert drawn[0] == drawn[1]
        # a broker exported for a cluster (README, "Gate hosts") is not a --broker given to a file
        exported = gatemesh("draw", command, qf, "-o", str(tmp_path / "e.svg"), env={"GATEMESH_BROKER": "mqtt://h:1"})
        assert exported.returncode == 0, exported.stderr
    for drawing in (("circuit", "--trace"), ("lamport",)):  # lamport sent a student to `draw circuit`
        inputs = gatemesh("draw", *drawing, qf, "x=1", "-o", str(tmp_path / "x.svg"))
        assert inputs.returncode == 1
        assert f"{qf} is drawn with the inputs it recorded: drop the name=value arguments" in " ".join(
            inputs.stderr.split()
        )
    typo = tmp_path / "square.jsn"  # a circuit file, its name mistyped: not told to drop its inputs
    typo.write_text('{"gates": [{"id": "x", "op": "input"}, {"id": "f", "op": "mul", "inputs": ["x", "x"]}]}')
    misnamed = gatemesh("draw", "lamport", str(typo), "x=1", "-o", str(tmp_path / "x.svg"))
    assert f"{typo}: a circuit file's name ends in .json, .yaml, .yml" in misnamed.stderr, misnamed.stderr
    program = gatemesh("draw", "circuit", "--trace", qf, "q = x + y; f = q * z", "-o", str(tmp_path / "x.svg"))
    assert "'q = x + y; f = q * z' is not the circuit recorded in" in program.stderr  # a program, not inputs
    both = gatemesh("draw", "lamport", "--trace", qf, "(x+y)*z", "x=1", "-o", str(tmp_path / "x.svg"))
    assert both.returncode == 1
    assert "SOURCE and input values make a new one: give one or the other" in " ".join(both.stderr.split())


def test_a_lamport_diagram_too_wide_to_read_is_refused_with_where_to_look_instead() -> None:
    trace = read_trace(IMG / "qf.jsonl")
    wide = compile_source(" + ".join(f"x{i}" for i in range(21)))  # 41 gates: 21 inputs, 20 adds
    with pytest.raises(DrawError, match=r"^41 gates: the diagram stays readable up to 40 .*`gatemesh export shiviz`"):
        draw_lamport(trace.model_copy(update={"header": trace.header.model_copy(update={"circuit": wide})}))


def test_a_lamport_diagram_past_the_limit_is_drawn_when_the_limit_is_raised(mosquitto_url: str, tmp_path: Path) -> None:
    path, out = tmp_path / "wide.jsonl", tmp_path / "wide.svg"
    wide = " + ".join(f"x{i}" for i in range(31))  # 61 gates: 31 inputs, 30 adds
    done = gatemesh("run", wide, *(f"x{i}=1" for i in range(31)), "--broker", mosquitto_url, "--trace", str(path))
    assert done.returncode == 0, done.stderr
    refused = gatemesh("draw", "lamport", str(path), "-o", str(out))
    assert refused.returncode == 1
    assert "or raise the limit with --max-gates" in " ".join(refused.stderr.split())
    drawn = gatemesh("draw", "lamport", str(path), "-o", str(out), "--max-gates", "61")
    assert drawn.returncode == 0, drawn.stderr
    arrows = [e for e in ET.fromstring(out.read_text()).iter() if {"msg", "forward"} <= set(e.get("class", "").split())]
    crossed = [
        e for e in read_trace(path).events if e.type == "cross" and e.msg is not None and e.msg.phase == "forward"
    ]
    assert len(arrows) == len(crossed) == 61  # every gate's value (the last add's to the orchestrator)


def test_events_of_another_trace_are_refused_and_a_run_without_events_is_not_drawn(
    mosquitto_url: str, tmp_path: Path
) -> None:
    first, second = (asyncio.run(traced(QF, QF_INPUTS, mosquitto_url)) for _ in range(2))
    neuron = asyncio.run(traced("sigmoid(w0*x0 + w1*x1 + w2)", NEURON, mosquitto_url))
    foreign = "\n".join([first.header.model_dump_json(), *(e.model_dump_json() for e in neuron.events)])
    with pytest.raises(TraceError, match=r"line 2: .*'(w0|x0|w1|x1|w2|\w+_\d+)', which is not a node of the header's"):
        parse_trace(foreign)
    path = tmp_path / "other-run.jsonl"
    path.write_text("\n".join([first.header.model_dump_json(), *(e.model_dump_json() for e in second.events)]))
    done = gatemesh("draw", "circuit", "--trace", str(path), "-o", str(tmp_path / "blank.svg"))
    assert done.returncode == 1
    assert f"run {first.header.run} has no events in this trace: nothing to draw" in done.stderr


def test_shiviz_export_refuses_a_trace_with_missing_events(mosquitto_url: str) -> None:
    trace = asyncio.run(traced(QF, QF_INPUTS, mosquitto_url))
    gap = [e for e in trace.events if not (e.node == "add_1" and e.vc.get("add_1") == 2)]
    broken = parse_trace(
        "\n".join(
            [
                trace.header.model_dump_json(),
                *(e.model_copy(update={"seq": i}).model_dump_json() for i, e in enumerate(gap, 1)),
            ]
        )
    )
    with pytest.raises(Exception, match="host add_1's clock jumps from 1 to 3"):
        export([("gap", broken)])


def test_gate_hosts_send_their_events_and_a_lost_host_is_drawn(mosquitto_url: str) -> None:
    """Gates on host processes publish their events on the trace topic; a killed host ends its lines."""
    broker = BrokerAddress.parse(mosquitto_url)
    tag = secrets.token_hex(3)
    steady = GateHostProcess(mosquitto_url, f"steady-{tag}")
    slow_name = f"slow-{tag}"
    slow = GateHostProcess(
        mosquitto_url, slow_name, argv=["--broker", mosquitto_url, "--name", slow_name, "--faults", "delay=400ms"]
    )
    name = f"traced-{tag}"
    try:
        steady.wait_online()
        slow.wait_online()
        circuit = compile_source(QF)
        # by-layer over two hosts: the leaves on the steady host, add_1 and f on the slow one
        record = asyncio.run(
            deploy_to_hosts(circuit, name, broker, hosts=[steady.name, slow_name], placement="by-layer")
        )
        assert record.gates_on(slow_name)

        async def clean_then_killed() -> tuple[Trace, Trace]:
            clean, killed = Recorder(), Recorder()
            async with on_deployment(name, broker, recorder=clean) as runner:
                assert await runner.run(QF_INPUTS, timeout=10) == QF_RESULT
                await clean.drain()
            async with on_deployment(name, broker, recorder=killed) as runner, asyncio.TaskGroup() as group:
                run = group.create_task(caught(runner.run(QF_INPUTS, timeout=10)))
                await asyncio.sleep(0.3)  # x, y, z have sent; add_1 holds its values for 400 ms
                await asyncio.to_thread(slow.kill)
                assert isinstance(await run, HostLost)
                await killed.drain(0.5)
            return clean.trace(), killed.trace()

        clean, killed = asyncio.run(clean_then_killed())
    finally:
        asyncio.run(undeploy(name, broker))
        steady.stop()
        slow.stop()
    hosts = {e.node: e.host for e in clean.events if e.node not in (BROKER, ORCHESTRATOR)}
    assert hosts == record.placement  # every gate's events came from its own host process
    assert clean.header.faults == f"{slow_name}: delay=400ms"  # the host's own faults, though the CLI gave none
    assert clean.replay() == QF_RESULT
    (lost,) = [e for e in killed.events if e.type == "host_lost"]
    assert slow_name in lost.note
    assert set(lost.gates or ()) == set(record.gates_on(slow_name))
    svg = draw_lamport(killed)
    assert len(by_class(svg, "lost")) >= len(record.gates_on(slow_name))
    assert by_class(svg, "undelivered")  # sent to the lost gates, never received


IMG = Path(__file__).parents[2] / "docs" / "img"


def without_events_of(trace: Trace, gate: str, *, host_lost: bool) -> Trace:
    """`trace` without `gate`'s own events, as if its host died before it sent them (and, with
    `host_lost`, the orchestrator's event that says so)."""
    kept = tuple(e for e in trace.events if e.node != gate)
    if not host_lost:
        return trace.model_copy(update={"events": kept})
    last = trace.events[-1]
    lost = last.model_copy(update={"seq": last.seq + 1, "type": "host_lost", "msg": None, "gates": (gate,)})
    return trace.model_copy(update={"events": (*kept, lost)})


def test_a_run_interrupted_before_it_ended_is_not_drawn_as_going_on(mosquitto_url: str) -> None:
    """Ctrl-C (or the page's Restart) cancels a run: its trace had no result and no error, as a
    step-mode pass that goes on has, and its messages in flight read "not delivered yet"."""

    async def interrupted() -> Trace:
        recorder = Recorder()
        slow = Faults.parse("delay=3000ms")  # every gate's message held back 3 s: in flight when cancelled
        async with (
            in_process(
                compile_source(QF), BrokerAddress.parse(mosquitto_url), recorder=recorder, faults=slow
            ) as runner,
            asyncio.TaskGroup() as group,
        ):
            run = group.create_task(runner.run(QF_INPUTS, timeout=30))
            await asyncio.sleep(0.5)
            await cancelled(run)
            await recorder.drain(1.0)
        return recorder.trace()

    trace = asyncio.run(interrupted())
    (record,) = trace.header.runs
    assert record.error == f"run {record.run} was interrupted before it finished"
    svg = draw_lamport(trace)
    assert by_class(svg, "arrow undelivered")  # x's, y's and z's values, held back
    assert "no receipt in the trace" in texts(svg, "legend")


def test_gates_with_a_fault_injector_tell_their_events_as_the_run_goes(mosquitto_url: str) -> None:
    """A gate sent its events once its part of the run was over: with delays, the page's live
    figure and diagram stayed blank for seconds while the sentences told of values computed."""

    async def learned() -> tuple[list[TraceEvent], RunResult]:
        recorder = Recorder()
        slow = Faults.parse("delay=400ms")  # every message a gate sends held back 400 ms
        async with in_process(
            compile_source(QF), BrokerAddress.parse(mosquitto_url), recorder=recorder, faults=slow
        ) as runner:
            result = await runner.run(QF_INPUTS, timeout=30)
            assert await recorder.drain() == 0
            return recorder.events, result

    events, result = asyncio.run(learned())
    assert result == QF_RESULT
    for leaf in ("x", "y", "z"):  # in the order the orchestrator learned of them
        received = next(i for i, e in enumerate(events) if e.type == "receive" and e.node == leaf)
        crossed = next(
            i
            for i, e in enumerate(events)
            if e.type == "cross" and e.msg is not None and (e.msg.src, e.msg.phase) == (leaf, "forward")
        )
        assert received < crossed, leaf  # its feed's receipt while its value was held back, not after its report


def test_the_orchestrator_hearing_of_a_lost_host_is_not_drawn_as_its_own_death() -> None:
    """The orchestrator's host_lost event had the lost gates' red cross on its own line, and its
    words ran over those gates' crosses, on the same row."""
    trace = read_trace(IMG / "qf.jsonl")
    heard = next(e for e in reversed(trace.events) if e.node == ORCHESTRATOR)
    lost = heard.model_copy(
        update={
            "seq": trace.events[-1].seq + 1,
            "type": "host_lost",
            "msg": None,
            "gates": ("add_1", "f"),
            "note": "host h2 went offline (connection lost)",
            "lamport": heard.lamport + 1,
        }
    )
    gone = without_events_of(trace, "add_1", host_lost=False)
    svg = draw_lamport(gone.model_copy(update={"events": (*gone.events, lost)}))
    (group,) = by_class(svg, "host-lost")
    (mark,) = [e for e in group if "heard-lost" in e.get("class", "")]
    crosses = by_class(svg, "lost")
    assert len(crosses) == 2  # add_1's line and f's: not the orchestrator's
    cross_bottom = max(float(n) for c in crosses for n in re.findall(r"[\d.]+,([\d.]+)", c.get("d", "")))
    (words,) = [e for e in group if e.tag == f"{SVG}text"]
    assert words.text == "host h2 went offline (connection lost)"
    assert float(words.get("y", "0")) - 8 > cross_bottom  # below the crosses (10 px letters), not over them
    assert float(mark.get("cy", "0")) < cross_bottom
    assert "host lost (as heard)" in texts(svg, "legend")


def test_a_message_whose_send_was_lost_with_its_host_is_drawn_from_its_crossing() -> None:
    """A killed host takes with it the events its gates had not sent yet; the messages they
    sent still crossed the broker and were received: drawn from the crossing, with the number."""
    trace = read_trace(IMG / "qf.jsonl")
    assert by_class(draw_lamport(trace), "unsent") == []
    svg = draw_lamport(without_events_of(trace, "add_1", host_lost=True))
    drawn = by_class(svg, "arrow unsent")
    numbers = sorted(t.text or "" for g in drawn for t in g if t.get("class") in ("value", "grad"))
    assert numbers == ["-4.00", "-4.00", "3.00"]  # add_1's value to f, and its gradients to x and y
    # no host lost: add_1's events are late (a gate sends them when its part is over), not gone
    late = draw_lamport(without_events_of(trace, "add_1", host_lost=False))
    assert by_class(late, "unsent") == by_class(late, "unrecorded") == []


def test_the_hover_text_writes_vector_clocks_as_the_trace_does() -> None:
    """As JSON, as the trace file and ShiViz have them: it was Python's {'orchestrator': 1}."""
    svg = draw_lamport(read_trace(IMG / "qf.jsonl"))
    hovers = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}title")]
    assert any('sent by orchestrator at lamport 1 {"orchestrator":1}' in h for h in hovers)
    assert not any("{'" in h for h in hovers)


def test_a_message_whose_number_was_never_read_is_labelled_with_its_name() -> None:
    """In step mode a held message's number is read only when it crosses: a message never
    delivered carried the recorder's whole note as its label, 52 characters along an arrow,
    cut off at the picture's edge ("...droppec")."""
    trace = read_trace(IMG / "qf.jsonl")
    unseen = "held in step mode: not delivered (yet, or dropped)"
    send = next(e for e in trace.events if e.type == "send" and e.msg and e.msg.id == "y:23")
    assert send.msg is not None
    held = send.model_copy(update={"msg": send.msg.model_copy(update={"grad": None, "note": unseen})})
    crossing = next(e for e in trace.events if e.type == "cross" and e.msg and e.msg.id == "y:23")
    events = [held if e is send else e for e in trace.events if e is not crossing]
    svg = draw_lamport(trace.model_copy(update={"events": tuple(events)}))  # received, its crossing not read
    (arrow,) = [g for g in by_class(svg, "arrow report") if "y:23" in (g[0].text or "")]
    assert [t.text for t in arrow if t.get("class") == "grad"] == ["y:23"]
    assert unseen in (arrow[0].text or "")  # the note stays in the hover
    assert not any(unseen in text for text in texts(svg, "note"))


def test_a_message_held_back_when_its_host_died_is_drawn_lost_with_it() -> None:
    """y's fault injector holds its report back 188 ms, and y's host dies meanwhile: the send and
    the delay are in the trace (y's part was over: its events had gone), the crossing never
    happens. It was drawn as sent and merely unreceived ("no receipt in the trace")."""
    trace = read_trace(IMG / "qf.jsonl")
    send = next(e for e in trace.events if e.type == "send" and e.msg and e.msg.id == "y:23")
    held = send.model_copy(update={"seq": send.seq + 1, "type": "delay", "delay_ms": 188.5})
    kept = [e for e in trace.events if not (e.msg and e.msg.id == "y:23" and e.type in ("cross", "receive"))]
    kept.insert(kept.index(send) + 1, held)
    last = kept[-1]
    lost = last.model_copy(
        update={"seq": last.seq + 2, "type": "host_lost", "msg": None, "gates": ("y",), "note": "host h2 went offline"}
    )
    svg = draw_lamport(trace.model_copy(update={"events": (*kept, lost)}))
    (arrow,) = by_class(svg, "arrow lost-with-host")
    hover = (arrow[0].text or "").split("\n")[-1]
    assert (
        hover
        == "sent by y at lamport 23; it never crossed the broker: y's host was lost while it held the message back"
    )
    assert [t.text for t in arrow if t.get("class") == "grad"] == ["-4.00"]
    assert len(by_class(svg, "drop-mark")) == 1  # it ends in a cross, as a message lost does
    assert by_class(svg, "arrow undelivered") == []
    kept.remove(held)  # not held back: its crossing may just not have been read (a tap reconnecting)
    unread = draw_lamport(trace.model_copy(update={"events": (*kept, lost)}))
    assert by_class(unread, "arrow lost-with-host") == []
    assert len(by_class(unread, "arrow undelivered")) == 1


def test_a_message_that_crossed_but_whose_sender_and_reader_were_lost_is_drawn_undelivered() -> None:
    """add_1 and f on one lost host: add_1's value to f and f's gradient to add_1 crossed the
    broker, but neither their sends nor their receipts are in the trace. Each is drawn from its
    crossing to its reader's line, with its number and without a head: nothing shows it arrived."""
    trace = read_trace(IMG / "qf.jsonl")
    lost = without_events_of(without_events_of(trace, "f", host_lost=False), "add_1", host_lost=True)
    lost = lost.model_copy(
        update={"events": (*lost.events[:-1], lost.events[-1].model_copy(update={"gates": ("add_1", "f")}))}
    )
    svg = draw_lamport(lost)
    drawn = by_class(svg, "arrow unsent")
    undelivered = [g for g in drawn if "undelivered" in (g[1].get("class") or "")]
    numbers = sorted(t.text or "" for g in undelivered for t in g if t.get("class") in ("value", "grad"))
    assert numbers == ["-4.00", "3.00"]  # q = 3 to f, and dq = z = -4 back to add_1
    assert all(g[1].get("marker-end") is None for g in undelivered)
    assert {(g[0].text or "").split("\n")[-1] for g in undelivered} == {
        "no receipt by f in the trace: its receiver's host was lost too",
        "no receipt by add_1 in the trace: its receiver's host was lost too",
    }
    assert len(drawn) - len(undelivered) == 4  # received by x, y, z and the orchestrator, drawn as before


def test_a_message_not_yet_delivered_in_a_run_going_on_is_drawn_as_waiting() -> None:
    """In step mode the page draws a pass while messages wait for the student: such a message
    has no receipt yet, which is not the same as none at all."""
    trace = read_trace(IMG / "qf.jsonl")
    first_feed = next(i for i, e in enumerate(trace.events) if e.type == "send" and e.msg and e.msg.phase == "feed")
    (record,) = trace.header.runs
    early = trace.model_copy(update={"events": trace.events[: first_feed + 1]})  # the first feed sent, not received
    going_on = early.model_copy(
        update={"header": early.header.model_copy(update={"runs": (record.model_copy(update={"result": None}),)})}
    )
    for shown, why, key in (
        (early, "no receipt in the trace", "no receipt in the trace"),
        (going_on, "not delivered yet to x: the run goes on (in step mode it waits for you)", "no receipt yet"),
    ):
        svg = draw_lamport(shown)
        (waiting,) = by_class(svg, "arrow undelivered")
        assert (waiting[0].text or "").split("\n")[-1] == f"sent by orchestrator at lamport 1; {why}"
        assert key in texts(svg, "legend")
    # on its way, it is drawn as a short arrow toward x, named as the page's list names it (the
    # sender and the Lamport clock of its send), ending before x's line: drawn to x's line at the
    # bottom, it ran through the events of every line between
    (waiting,) = by_class(draw_lamport(going_on), "arrow undelivered")
    line = next(e for e in waiting if e.tag == f"{SVG}line")
    assert 0 < float(line.get("x2", "0")) - float(line.get("x1", "0")) < COLUMN
    assert [t.text for t in waiting if t.get("class") == "value"] == ["orchestrator:1"]


def test_what_a_gate_on_a_lost_host_received_is_shown_by_what_it_sent() -> None:
    """add_1's host is lost with add_1's events: its receipts of x's and y's values and of f's
    gradient are not in the trace, but its own value and gradients crossed the broker after
    them, and a gate sends those only once it has what it waits for."""
    trace = read_trace(IMG / "qf.jsonl")
    without_add = without_events_of(trace, "add_1", host_lost=True)
    shown = without_add.shown_received()
    assert sorted(
        (msg_id.split(":")[0], reader, proof.msg.phase if proof.msg else "")
        for (msg_id, reader), proof in shown.items()
    ) == [
        ("f", "add_1", "backward"),
        ("x", "add_1", "forward"),
        ("y", "add_1", "forward"),
    ]
    svg = draw_lamport(without_add)
    drawn = by_class(svg, "arrow unrecorded")
    numbers = sorted(t.text or "" for g in drawn for t in g if t.get("class") in ("value", "grad"))
    assert numbers == ["-2.00", "-4.00", "5.00"]
    state = state_at(without_add)
    assert (state.values["x"], state.values["y"], state.parts[("add_1", "f", 0)]) == (-2.0, 5.0, -4.0)
    assert state_at(without_events_of(trace, "add_1", host_lost=False)).values.get("x") is None  # not lost: late


def test_the_shiviz_export_names_a_node_whose_events_are_missing() -> None:
    trace = read_trace(IMG / "qf.jsonl")
    without_x = trace.model_copy(update={"events": tuple(e for e in trace.events if e.node != "x")})
    with pytest.raises(DrawError, match=r"has heard of event \d+ of x, but x has no events in the trace; ShiViz needs"):
        export([("qf", without_x)])


async def test_an_arrows_hover_shows_the_message_as_it_crossed_the_broker(mosquitto_url: str) -> None:
    """The payload a Lamport arrow's <title> shows is rebuilt from the trace; it must be, byte
    for byte, what a client subscribed to the deployment's topics received."""
    broker = BrokerAddress.parse(mosquitto_url)
    recorder = Recorder()
    crossed: set[str] = set()
    async with in_process(compile_source(QF), broker, recorder=recorder) as runner, client(broker) as spy:
        await spy.subscribe(f"gatemesh/{runner.deployment}/#", qos=1)
        assert await runner.run(QF_INPUTS) == QF_RESULT
        await recorder.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for message in spy.messages:
                    assert isinstance(message.payload, bytes)
                    if b'"clock"' in message.payload:
                        crossed.add(f"{message.topic.value}\n{message.payload.decode()}")
    trace = recorder.trace()
    sent = {as_sent(trace, e) for e in trace.events if e.type == "send"}
    assert len(sent) == len(crossed) == 16
    assert sent == crossed
    titles = {t.text or "" for g in by_class(draw_lamport(trace), "arrow") for t in g if t.tag == f"{SVG}title"}
    assert {title.split("\nsent by")[0] for title in titles} == crossed


def test_a_send_whose_number_is_not_known_yet_shows_its_record() -> None:
    """In step mode a send is read before its message crosses (it waits to be delivered): no
    payload can be rebuilt yet, and drawing must not fail for it."""
    trace = read_trace(IMG / "qf.jsonl")
    send = next(e for e in trace.events if e.type == "send" and e.msg is not None and e.msg.phase == "forward")
    assert send.msg is not None
    held = send.model_copy(update={"msg": send.msg.model_copy(update={"value": None, "note": "held"})})
    assert as_sent(trace, held) == dumps_msg(held)
    assert as_sent(trace, send).startswith(f"{send.msg.topic}\n{{")


def test_a_dropped_message_ends_between_two_lifelines() -> None:
    svg = draw_lamport(read_trace(IMG / "faulty.jsonl"))
    lines = [float(e.get("x1", "0")) for e in by_class(svg, "lifeline")]
    drops = by_class(svg, "arrow dropped")
    assert drops
    for drop in drops:
        (line,) = [e for e in drop if e.tag == f"{SVG}line"]
        end = float(line.get("x2", "0"))
        assert min(abs(end - x) for x in lines) == COLUMN / 2


def test_a_dropped_gradient_is_drawn_lost_on_the_circuit_where_it_would_be() -> None:
    """The README's faulty run dropped add_1's gradient to x: the figure left x's gradient blank,
    as if it were on its way; it says "lost" there, and every number that arrived as before."""
    trace = read_trace(IMG / "faulty.jsonl")
    (drop,) = [e.msg for e in trace.events if e.type == "drop" and e.msg is not None]
    assert (drop.src, drop.dest, drop.phase) == ("add_1", ("x",), "backward")
    svg = draw_circuit(trace.circuit, state_at(trace))
    (lost,) = by_class(svg, "grad-lost")
    assert lost.findtext(f"{SVG}title") == "df/dx: a gradient's message to it was dropped"
    assert texts(svg, "grad-lost") == ["lost"]
    assert sorted(texts(svg, "grad")) == ["-4.00", "-4.00", "1.00", "3.00"]  # y, add_1, the seed, z
    assert texts(svg, "lost-key") == ["lost: its message dropped"]
    assert texts(draw_circuit(trace.circuit, state_at(read_trace(IMG / "qf.jsonl"))), "lost-key") == []


def test_a_probe_answer_is_said_at_the_gate_that_answered() -> None:
    """Five answers ("finished", "waiting grads") converging on the orchestrator: their words, on
    the arrows, sat nearer another answer's line than their own. They stand beside the sending
    gate's event, on its lifeline's side, and the arrows carry none."""
    trace = read_trace(IMG / "faulty.jsonl")
    svg = draw_lamport(trace)
    answers = sorted(e.msg.note for e in trace.events if e.type == "send" and e.msg and e.msg.phase == "status")
    assert answers == ["finished"] * 4 + ["waiting grads"]
    lines = [float(e.get("x1", "0")) for e in by_class(svg, "lifeline")]
    words = by_class(svg, "status-word")
    assert sorted(w.text or "" for w in words) == answers
    for word in words:  # 6 px from a lifeline: its gate's (none is nearer another line)
        assert min(abs(float(word.get("x", "0")) - x) for x in lines) == 6
    assert all(t.text is None for g in by_class(svg, "arrow status") for t in g if t.tag == f"{SVG}text")


def test_message_k_shows_the_wires_as_explain_line_k_tells_them() -> None:
    """--step counts events (sends, crossings, receipts, computes); a student counts messages, as
    --explain numbers them: line 7 is add's 3 sent to mul, line 8 mul's -12 sent to the orchestrator."""
    trace = read_trace(IMG / "qf.jsonl")
    seventh = state_at(trace, None, step_of_message(trace, None, 7))
    assert (seventh.values.get("add_1"), seventh.output_value) == (3.0, None)
    eighth = state_at(trace, None, step_of_message(trace, None, 8))
    assert (eighth.output_value, eighth.parts) == (-12.0, {})
    last = state_at(trace, None, step_of_message(trace, None, 16))
    assert last.parts == state_at(trace).parts  # every gradient delivered
    with pytest.raises(DrawError, match=r"--message 17: --explain tells this trace in 16 numbered lines; give 1 to 16"):
        step_of_message(trace, None, 17)


def test_message_k_never_takes_back_what_an_earlier_line_showed() -> None:
    """A fault --explain tells late (its gate's events came after the message crossed) ended
    before the lines told before it: --message 19 of the README's faulty run drew fewer numbers
    than --message 18, as if stepping on went back in time."""
    trace = read_trace(IMG / "faulty.jsonl")
    told = sum(1 for e in trace.events if numbered(e))
    assert told == 45
    shown = [state_at(trace, None, step_of_message(trace, None, k)) for k in range(1, told + 1)]
    for k, (before, after) in enumerate(itertools.pairwise(shown), 2):
        assert before.values.items() <= after.values.items(), f"--message {k}"
        assert before.parts.items() <= after.parts.items(), f"--message {k}"
    assert shown[-1].parts == state_at(trace).parts


FAULT_LINE = {
    "the fault injector drops ": "drop",
    "the fault injector holds ": "delay",
    "'s messages in another order": "reorder",
    "the orchestrator stops waiting": "timeout",
}
"""How --explain's sentence for each kind of fault begins or reads (any other numbered line tells a message)."""


def test_message_k_finds_line_k_by_its_number_not_its_place() -> None:
    """A trace without one of its lines (a file cut short) drew line 4 for --message 3."""
    trace = read_trace(IMG / "qf.jsonl")
    numbered_events = [e for e in trace.events if e.type == "cross"]
    for line, event in enumerate(numbered_events, 1):
        event.line = line
    fourth = step_of_message(trace, None, 4)
    gapped = trace.model_copy(update={"events": tuple(e for e in trace.events if e.line != 3)})
    assert step_of_message(gapped, None, 4) == fourth
    with pytest.raises(DrawError, match=r"--message 3: this trace has no event of --explain's line 3"):
        step_of_message(gapped, None, 3)


def test_message_k_is_explain_line_k_under_faults_and_retries(mosquitto_url: str, tmp_path: Path) -> None:
    """Under faults, --explain numbers the faults too, in the order it learned of them, and
    --retries runs go on numbering: --message K counted messages only, run by run, and showed
    the state of another line than K's."""
    path = tmp_path / "faulty.jsonl"
    faults = "drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=2"
    args = ["run", QF, "x=-2", "y=5", "z=-4", "--faults", faults, "--timeout", "1", "--retries", "1"]
    done = gatemesh(*args, "--explain", "--trace", str(path), "--broker", mosquitto_url)
    told = [line for line in done.stdout.splitlines() if re.match(r"\s*\d+\. ", line)]
    trace = read_trace(path)
    assert len(trace.header.runs) == 2, done.stdout
    by_seq = {e.seq: e for e in trace.events}
    by_line = {e.line: e for e in trace.events if e.line is not None}
    assert sorted(by_line) == list(range(1, len(told) + 1))
    seen: Counter[str] = Counter()
    latest: dict[str, int] = {}
    """By run, the latest end of its lines told so far: the picture at line K has every earlier line's."""
    for k, line in enumerate(told, 1):
        assert line.lstrip().startswith(f"{k}. ")
        told_event = by_line[k]
        kind = next((kind for words, kind in FAULT_LINE.items() if words in line), "cross")
        assert told_event.type == kind, (k, line, told_event)
        end = told_event.seq
        if kind == "cross":  # a message's line ends at its delivery, or its crossing if none was recorded
            crossed = told_event.msg
            assert crossed is not None
            receipts = [e.seq for e in trace.events if e.run == told_event.run and e.type == "receive"]
            end = next((seq for seq in receipts if (m := by_seq[seq].msg) and m.id == crossed.id), end)
        latest[told_event.run] = max(latest.get(told_event.run, 0), end)
        assert step_of_message(trace, told_event.run, k) == latest[told_event.run], (k, line)
        seen[kind] += 1
    assert seen["drop"] + seen["delay"] > 0, done.stdout  # this seed's faults are told, and counted
    first, second = (record.run for record in trace.header.runs)
    starts = min(e.seq for e in trace.events if e.run == second)
    with pytest.raises(DrawError, match=rf"^--step 3: --step counts the whole trace's events, and run {second}'s are"):
        state_at(trace, second, 3)  # before the run began: a blank picture, said nothing of
    assert state_at(trace, second, starts - 1).values == {}
    assert state_at(trace, first, 3).events == 3
    last_of_first = max(k for k, e in by_line.items() if e.run == first)
    with pytest.raises(
        DrawError, match=rf"--message {last_of_first}: --explain's line {last_of_first} is of run {first}"
    ):
        step_of_message(trace, second, last_of_first)


def test_a_caption_says_which_run_and_why_it_failed() -> None:
    faulty = read_trace(IMG / "faulty.jsonl")
    assert caption(faulty) == (
        "f = (x + y) * z at x=-2, y=5, z=-4; faults drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=2; "
        "the run failed: did not finish within 1 s"
    )
    assert caption(read_trace(IMG / "qf.jsonl"), step=5) == (
        "f = (x + y) * z at x=-2, y=5, z=-4; after 5 of 58 events, 2 of its 16 broker crossings"
    )
    # a run that lost messages: it said "16 of its 16 messages crossed" where three had been dropped
    drops = [e for e in faulty.events if e.type == "drop"]
    last = faulty.events[-1].seq
    assert caption(faulty, step=last).endswith(
        f"of its {sum(e.type == 'cross' for e in faulty.events)} broker crossings ({len(drops)} message"
        f"{'s' if len(drops) != 1 else ''} dropped, never crossing)"
    )


FAN_OUT = 500


def test_a_gate_with_500_consumers_is_traced_whole(mosquitto_url: str) -> None:
    """x feeds 500 products and hears 500 gradients, each with a vector clock of every gate (~1,500
    entries): x's events still fit the broker's packet limit (vc deltas in its batches), the trace
    is complete, and its clocks hold what causality says."""
    circuit = compile_source(" + ".join(f"x*w{i}" for i in range(FAN_OUT)), name="fan500")
    inputs = {"x": 0.5} | {f"w{i}": i % 7 - 3.0 for i in range(FAN_OUT)}

    async def traced_pass() -> tuple[RunResult, Recorder, int]:
        recorder = Recorder()
        broker = BrokerAddress.parse(mosquitto_url)
        async with in_process(circuit, broker, connections="shared", recorder=recorder, ready_timeout=120) as runner:
            result = await runner.run(inputs, timeout=60)
            return result, recorder, await recorder.drain(timeout=60)

    result, recorder, missing = asyncio.run(traced_pass())
    assert missing == 0
    assert result == evaluate(circuit, inputs)
    trace = recorder.trace()
    assert trace.replay() == result
    sends = {e.msg.id: e for e in trace.events if e.type == "send" and e.msg is not None}
    receipts = [e for e in trace.events if e.type == "receive" and e.msg is not None]
    assert sum(e.node == "x" and e.msg is not None and e.msg.phase == "backward" for e in receipts) == FAN_OUT
    for receipt in receipts:
        assert receipt.msg is not None
        send = sends[receipt.msg.id]
        assert all(count <= receipt.vc.get(node, 0) for node, count in send.vc.items()), receipt.msg.id
    assert max(len(e.vc) for e in trace.events) == len(circuit.gates) + 1  # every gate, and the orchestrator


def test_an_error_reports_arrow_is_labelled_with_its_code(mosquitto_url: str, tmp_path: Path) -> None:
    """log(-1): the error arrow's label was the whole reason, wider than the diagram's columns,
    drawn across the arrow before it and the receiver's events."""
    out = tmp_path / "log.svg"
    done = gatemesh("draw", "lamport", "log(x)", "x=-1", "--broker", mosquitto_url, "-o", str(out))
    assert done.returncode == 0, done.stderr
    (arrow,) = by_class(out.read_text(), "arrow error")
    assert [t.text for t in arrow if t.get("class") == "note"] == ["error: domain"]
    assert "domain: output of log(-1) is undefined" in (arrow.findtext(f"{SVG}title") or "")


def test_draw_lamport_runs_a_source_with_inputs_and_draws_that_run_even_when_its_faults_fail_it(
    mosquitto_url: str, tmp_path: Path
) -> None:
    """`draw lamport SOURCE x=.. --faults ..` runs the circuit once, traced, and draws that run:
    here every message a gate sends is dropped, so the run times out and the diagram shows why."""
    out = tmp_path / "dropped.svg"
    broker = ["--broker", mosquitto_url]
    done = gatemesh(
        "draw", "lamport", QF, "x=-2", "y=5", "z=-4", "--faults", "drop=1", "--timeout", "1", *broker, "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "warning: the run failed: run " in done.stderr
    assert "(under --faults drop=1: the picture shows what they did)" in " ".join(done.stderr.split())
    assert "f = (x + y) * z at x=-2, y=5, z=-4; faults drop=1; the run failed" in out.read_text()  # as a run's trace
    classes = [e.get("class", "") for e in ET.fromstring(out.read_text()).iter()]
    assert classes.count("msg forward drop") == 3  # the three inputs' values, each dropped
    assert classes.count("cross drop-mark") == 3 + 5  # and the five gates' answers to the probe
    assert classes.count("msg feed") == 3
    assert "timeout" in classes
    # the circuit figure of such a run: it had no --faults; each input's value is drawn lost
    figure = tmp_path / "lost.svg"
    done = gatemesh(
        "draw", "circuit", QF, "x=-2", "y=5", "z=-4", "--faults", "drop=1", "--timeout", "1", *broker, "-o", str(figure)
    )
    assert done.returncode == 0, done.stderr
    assert texts(figure.read_text(), "value-lost") == ["lost"] * 3
    assert texts(figure.read_text(), "value") == ["", ""]  # add_1 and f never computed theirs
    alone = gatemesh("draw", "lamport", QF, "-o", str(out))
    assert alone.returncode == 1
    said = " ".join(alone.stderr.split())
    assert "(x+y)*z: not a trace file but a circuit; give its input values to run it once and draw that run" in said
    assert "or draw the circuit itself with `gatemesh draw circuit '(x+y)*z'`" in said
    missing = gatemesh("draw", "lamport", str(tmp_path / "run.jsonl"), "-o", str(out))  # a trace not there
    assert "no trace file" in missing.stderr
    assert "give a trace (gatemesh run ... --trace FILE), or SOURCE and input values" in " ".join(
        missing.stderr.split()
    )
    constant = gatemesh("draw", "lamport", "2*3", *broker, "-o", str(out))  # no inputs: it runs as it is
    assert constant.returncode == 0, constant.stderr
    trace = IMG / "qf.jsonl"
    mixed = gatemesh("draw", "lamport", str(trace), "--faults", "drop=1", "-o", str(out))
    assert mixed.returncode == 1
    assert "a trace file is drawn as it is; --faults, --broker and --timeout apply to a run" in mixed.stderr
