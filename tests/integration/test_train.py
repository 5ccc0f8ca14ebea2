"""Training over a real Mosquitto: tensor gates and parameter actors against micrograd and the reference.

The mesh must match the in-process numpy reference bit for bit (same ops, same summation
order, same update), and micrograd's own demo loop to 1e-9 relative at every step. Faults,
a second replica on another host process, and a host killed mid-training must change none
of that: a killed host fails the step by name, and resuming from the checkpoint ends with the
parameters of a run that was never interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from gates.faults import Faults
from gates.frame import decode
from gates.mqtt311 import Session
from gates.tensor_ops import Array
from gates.transport import BrokerAddress
from orchestrator import checkpoint, deploy, mlp, mlp_scalar, moons, tensor_deploy
from orchestrator.checkpoint import Checkpoint
from orchestrator.errors import BrokerError, HostLost
from orchestrator.moons import Points
from orchestrator.result import RunResult
from orchestrator.train import ReferenceEngine, Schedule, StepRecord, Training, train
from tests import micrograd_oracle
from tests.processes import GateHostProcess, gatemesh

pytestmark = pytest.mark.integration


def start(schedule: Schedule) -> Checkpoint:
    return Checkpoint(mlp.micrograd_init(schedule.seed), 0, schedule.seed, schedule.steps, schedule.batch)


def reference(schedule: Schedule) -> Training:
    circuit = mlp.build(schedule.batch, replicas=schedule.replicas)
    return asyncio.run(train(ReferenceEngine(circuit), circuit, moons.load(), schedule, start(schedule)))


def assert_same_bits(ours: dict[str, Array], theirs: dict[str, Array]) -> None:
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name


def assert_same_records(ours: Training, theirs: Training) -> None:
    assert [(r.step, r.loss, r.accuracy) for r in ours.records] == [
        (r.step, r.loss, r.accuracy) for r in theirs.records
    ]


@pytest.fixture
def hosts(mosquitto_url: str) -> Iterator[list[GateHostProcess]]:
    started: list[GateHostProcess] = []
    yield started
    for host in started:
        host.stop()


def host(url: str, started: list[GateHostProcess]) -> GateHostProcess:
    process = GateHostProcess(url, f"train-{secrets.token_hex(3)}")
    started.append(process)
    process.wait_online()
    return process


def test_the_mesh_equals_micrograd_and_the_reference_at_every_step(mosquitto_url: str) -> None:
    schedule = Schedule()
    circuit = mlp.build(100)

    async def on_mesh() -> Training:
        async with tensor_deploy.in_process(circuit, BrokerAddress.parse(mosquitto_url)) as engine:
            return await train(engine, circuit, moons.load(), schedule, start(schedule))

    mesh = asyncio.run(on_mesh())
    expected, final = micrograd_oracle.demo_run()
    for theirs, ours in zip(expected, mesh.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=1e-9, abs=0), ours.step
        assert ours.accuracy == theirs.accuracy, ours.step
    assert mesh.records[-1].accuracy == 1.0
    for name, value in mesh.params.items():
        assert value == pytest.approx(final[name], rel=1e-8, abs=1e-12), name
    ref = reference(schedule)
    assert_same_records(mesh, ref)
    assert_same_bits(mesh.params, ref.params)


def test_duplicated_delayed_and_reordered_messages_change_no_parameter(mosquitto_url: str) -> None:
    schedule = Schedule(steps=8, seed=5)
    circuit = mlp.build(100)
    faults = Faults.parse("dup=0.5,delay=0-4ms,reorder,seed=11")

    copies: Counter[tuple[str, str, int | None]] = Counter()

    def count(name: str, payload: bytes) -> None:
        header = decode(payload).header
        copies[(name, header.run, header.port)] += 1

    async def faulty() -> Training:
        address = BrokerAddress.parse(mosquitto_url)
        watcher = await Session.open(address, count)
        try:
            await watcher.subscribe(["gatemesh/+/fwd/+", "gatemesh/+/grad/+"])
            async with tensor_deploy.in_process(circuit, address, faults=faults) as engine:
                return await train(engine, circuit, moons.load(), schedule, start(schedule))
        finally:
            watcher.close()

    mesh = asyncio.run(faulty())
    duplicated = sum(1 for n in copies.values() if n > 1)
    assert duplicated > len(copies) // 4, (duplicated, len(copies))  # the faults were there
    ref = reference(schedule)
    assert_same_records(mesh, ref)
    assert_same_bits(mesh.params, ref.params)


def test_replicas_on_two_host_processes_add_their_gradients(mosquitto_url: str, hosts: list[GateHostProcess]) -> None:
    names = [host(mosquitto_url, hosts).name for _ in range(2)]
    schedule = Schedule(steps=5, batch=40, replicas=2, seed=3)
    circuit = mlp.build(40, replicas=2)
    mapping = tensor_deploy.place_tensor(circuit, names, "by-replica")
    assert {mapping["r0.mm1"], mapping["r1.mm1"]} == set(names)

    async def on_hosts() -> Training:
        address = BrokerAddress.parse(mosquitto_url)
        async with tensor_deploy.on_hosts(circuit, address, hosts=names) as engine:
            assert engine.placement == mapping
            return await train(engine, circuit, moons.load(), schedule, start(schedule))

    mesh = asyncio.run(on_hosts())
    ref = reference(schedule)
    assert_same_records(mesh, ref)
    assert_same_bits(mesh.params, ref.params)
    batches = [mlp.batch_indices(100, 40, 3, k) for k in range(5)]
    expected, _ = micrograd_oracle.train(moons.load(), 3, 5, batches)
    for theirs, ours in zip(expected, mesh.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=1e-9, abs=0)


def test_tensor_gates_that_never_say_ready_are_named_ten_and_counted_beyond(
    mosquitto_url: str, hosts: list[GateHostProcess]
) -> None:
    """A stopped host: all 29 gates of the training circuit stay silent; the error names the
    first ten (sorted, each with its host) and counts the rest, not a line of 29 names."""
    frozen = host(mosquitto_url, hosts)
    circuit = mlp.build(40)
    silent = sorted(g.id for g in circuit.gates)

    async def deploy_on_it() -> None:
        async with tensor_deploy.on_hosts(circuit, BrokerAddress.parse(mosquitto_url), hosts=[frozen.name], timeout=1):
            raise AssertionError("a stopped host's gates said ready")

    os.kill(frozen.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BrokerError) as caught:
            asyncio.run(deploy_on_it())
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
    shown = ", ".join(f"{g} (on {frozen.name})" for g in silent[:10])
    assert str(caught.value) == f"29 tensor gate(s) not ready after 1 s: {shown} and 19 more"


def test_a_killed_host_fails_the_step_by_name_and_resuming_ends_where_an_unbroken_run_does(
    mosquitto_url: str, hosts: list[GateHostProcess], tmp_path: Path
) -> None:
    schedule = Schedule(steps=10, seed=9)
    circuit = mlp.build(100)
    saved = tmp_path / "moons.npz"
    address = BrokerAddress.parse(mosquitto_url)
    first = host(mosquitto_url, hosts)

    def kill_after_step_3(record: StepRecord) -> None:
        if record.step == 3:
            first.kill()

    async def until_killed() -> None:
        async with tensor_deploy.on_hosts(circuit, address, hosts=[first.name], step_timeout=20) as engine:
            await train(
                engine, circuit, moons.load(), schedule, start(schedule), checkpoint=saved, on_step=kill_after_step_3
            )

    with pytest.raises(HostLost) as failure:
        asyncio.run(until_killed())
    assert failure.value.hosts == [first.name]
    assert f"step 4 failed: host {first.name} went offline" in str(failure.value)
    assert "W1" in failure.value.gates
    resumed_from = checkpoint.load(saved, circuit.param_shapes)
    assert resumed_from.step == 4

    second = host(mosquitto_url, hosts)

    async def resumed() -> Training:
        async with tensor_deploy.on_hosts(circuit, address, hosts=[second.name]) as engine:
            return await train(engine, circuit, moons.load(), schedule, resumed_from, checkpoint=saved)

    rest = asyncio.run(resumed())
    assert [r.step for r in rest.records] == list(range(4, 10))
    ref = reference(schedule)
    assert_same_bits(rest.params, ref.params)
    assert [(r.loss, r.accuracy) for r in rest.records] == [(r.loss, r.accuracy) for r in ref.records[4:]]
    assert_same_bits(checkpoint.load(saved, circuit.param_shapes).params, ref.params)


def test_a_step_lost_to_a_hosts_faults_names_the_host_and_its_faults(mosquitto_url: str) -> None:
    """A host that drops messages: the error said only "parameter(s) W1, b2, W3, b3 did not take
    their values", nothing of where they were or why."""
    name = f"drops-{secrets.token_hex(3)}"
    dropping = GateHostProcess(
        mosquitto_url, name, argv=["--broker", mosquitto_url, "--name", name, "--faults", "drop=1"]
    )
    try:
        dropping.wait_online()
        done = gatemesh("train", "--steps", "1", "--hosts", name, "--timeout", "2", "--broker", mosquitto_url)
    finally:
        dropping.stop()
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"parameter(s) W1, b1, W2, b2, W3, b3 on {name} did not take their values within 2 s" in said, said
    assert f"host {name} injects faults drop=1: a lost message fails its step (training does not retry)" in said
    assert said.endswith("; with --checkpoint FILE, every step is saved and --resume goes on from the last one")


def test_training_on_hosts_not_online_says_it_waits_for_them(mosquitto_url: str) -> None:
    """Under a progress bar at 0, a wait for hosts was silence until its timeout."""
    ghost = f"ghost-{secrets.token_hex(3)}"
    done = gatemesh("train", "--steps", "1", "--hosts", ghost, "--timeout", "0.5", "--broker", mosquitto_url)
    assert done.returncode == 1
    assert f"waiting up to 0.5 s for {ghost} (online now: " in done.stdout, done.stdout
    said = " ".join(done.stderr.split())
    assert f"waited 0.5 s for the hosts {ghost} on {mosquitto_url}; not online: {ghost}" in said


def test_the_cli_trains_prints_json_plots_and_resumes(mosquitto_url: str, tmp_path: Path) -> None:
    saved, picture = tmp_path / "c.npz", tmp_path / "boundary.png"
    args = ["train", "moons", "--broker", mosquitto_url, "--steps", "4", "--seed", "2", "--json"]
    done = gatemesh(*args, "--checkpoint", str(saved), "--plot", str(picture))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    ref = reference(Schedule(steps=4, seed=2))
    assert [(s["step"], s["loss"], s["accuracy"]) for s in result["steps"]] == [
        (r.step, r.loss, r.accuracy) for r in ref.records
    ]
    assert result["seconds_per_step"] > 0
    assert result["final"]["params"]["W1"] == ref.params["W1"].tolist()
    # "final" is the trained parameters' fit on all the points: micrograd's loss one step later
    _, net = micrograd_oracle.train(moons.load(), 2, 4)
    data = moons.load()
    after = micrograd_oracle.demo_step(net, data.X.tolist(), data.y.tolist(), 4, 4)
    assert result["final"]["loss"] == pytest.approx(after.loss, rel=1e-9)
    assert (result["final"]["accuracy"], result["final"]["points"]) == (after.accuracy, 100)
    assert result["final"]["loss"] != result["steps"][-1]["loss"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = saved.read_bytes()
    overwrite = gatemesh(*args, "--checkpoint", str(saved))  # without --resume: the saved steps stay
    assert overwrite.returncode == 1
    assert f"--checkpoint {saved}: the file exists; add --resume to go on from it, or remove it" in overwrite.stderr
    assert saved.read_bytes() == kept
    again = gatemesh(*args, "--checkpoint", str(saved), "--resume")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["steps"] == []
    assert "4/4" not in again.stderr  # no bar: nothing was left to do ("4/4 loss -" read as done just now)
    assert json.loads(again.stdout)["final"]["loss"] == result["final"]["loss"]
    wrong = gatemesh("train", "moons", "--engine", "reference", "--steps", "5", "--checkpoint", str(saved), "--resume")
    assert wrong.returncode == 1
    assert "resume with the same schedule" in wrong.stderr
    assert wrong.stdout == ""  # said before training: no progress bar drawn first
    numpy = gatemesh("train", "moons", "--engine", "reference", "--steps", "2")
    assert numpy.returncode == 0, numpy.stderr
    assert "trained 2 steps on the numpy reference in this process: loss " in numpy.stdout  # no "(29 gates)"
    assert "the loss rose" not in numpy.stdout + numpy.stderr


def test_data_far_from_unit_scale_is_said_to_diverge_and_still_plotted(tmp_path: Path) -> None:
    """Points 0 to 20 apart: the loss grew to 1e9 in silence, and --plot then died with a
    traceback (its grid, at the moons' spacing, was more than a frame may hold)."""
    data, picture = tmp_path / "wide.csv", tmp_path / "wide.png"
    rows = [f"{x:g},{20 - x:g},{1 if x > 10 else -1}" for x in np.linspace(0, 20, 50)]
    data.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    done = gatemesh(
        "train",
        "moons",
        "--engine",
        "reference",
        "--steps",
        "20",
        "--data",
        str(data),
        "--plot",
        str(picture),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    first, final = result["steps"][0], result["final"]
    assert final["loss"] > 1000 * first["loss"]
    said = " ".join(done.stderr.split())
    assert (  # all the points a step: step 0's loss is the starting parameters' on all of them
        f"the loss on all 50 points rose, from {first['loss']:.6g} before training to {final['loss']:.6g}: "
        "micrograd's learning rate "
        "(1.0, falling to 0.1) is made for inputs of about unit scale, and this data's coordinates run from 0 "
        "to 20; scale them to about -2..2"
    ) in said, said
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_training_that_overflows_fails_in_one_line_naming_the_gate(mosquitto_url: str, tmp_path: Path) -> None:
    """The moons times 1e200: the mesh's step 1 failed with the gate's error report logged as
    JSON three times and its name twice; the reference trained a step and then died in a
    traceback (the fit on all the points overflowed), as did data at 1e307 before any step."""
    data = moons.load()

    def scaled(factor: float) -> str:
        path = tmp_path / f"x{factor:g}.csv"
        rows = [f"{x1!r},{x2!r},{label:g}" for (x1, x2), label in zip((data.X * factor).tolist(), data.y, strict=True)]
        path.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
        return str(path)

    def failed(*args: str) -> str:
        done = gatemesh("train", "moons", *args)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert "WARNING" not in done.stderr, done.stderr
        return done.stderr.splitlines()[-1]

    wide = "micrograd's learning rate (1.0, falling to 0.1) is made for inputs of about unit scale"
    mesh = failed("--steps", "3", "--data", scaled(1e200), "--broker", mosquitto_url)
    assert mesh.startswith(
        "error: step 1: gate l2.W1 failed: output of l2 is not finite (overflow or an undefined value); " + wide
    ), mesh  # mid-training too, the data's scale is said
    reference = failed("--steps", "1", "--data", scaled(1e200), "--engine", "reference")
    assert reference.startswith(
        "error: training diverged: after step 0, the last, the loss on all 100 points cannot be computed (l2.W1: "
        "output of l2 "
    ), reference
    assert wide in reference
    at_once = failed("--steps", "3", "--data", scaled(1e307), "--engine", "reference")
    assert at_once.startswith("error: the loss on all 100 points cannot be computed (hinge: "), at_once
    assert "with the starting parameters: " + wide in at_once


def test_the_scalar_gate_mesh_trains_as_micrograd_does(mosquitto_url: str) -> None:
    """The same network with one gate actor per multiply (~5,200 gates for 8 points)."""
    data = moons.load()
    points = Points(data.X[:8], data.y[:8])
    schedule = Schedule(steps=2, batch=8, seed=21)
    circuit = mlp_scalar.circuit(points, range(8))

    async def on_mesh() -> Training:
        address = BrokerAddress.parse(mosquitto_url)
        async with deploy.in_process(circuit, address, connections="shared", ready_timeout=120) as runner:

            async def run_pass(inputs: Mapping[str, float]) -> RunResult:
                return await runner.run(inputs, timeout=60)

            engine = mlp_scalar.ScalarEngine(circuit, run_pass)
            return await train(engine, mlp.build(8), points, schedule, start(schedule))

    mesh = asyncio.run(on_mesh())
    expected, _ = micrograd_oracle.train(points, 21, 2)
    for theirs, ours in zip(expected, mesh.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=1e-9, abs=0)
        assert ours.accuracy == theirs.accuracy
