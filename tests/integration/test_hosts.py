"""Gate hosts as separate processes: deploy, run, share, explain, undeploy, and lose a host."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiomqtt
import pytest

from gates.protocol import ORCHESTRATOR, Feed, deployment_topic, topic
from gates.transport import QOS, BrokerAddress, client, publish_all, read_retained
from orchestrator.cluster import read_cluster
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, find, on_deployment, undeploy
from orchestrator.errors import BrokerError, DeployError, DeploymentGone, HostLost
from orchestrator.records import head_of
from orchestrator.reference import evaluate
from orchestrator.result import RunResult
from orchestrator.runner import RecordWatch, open_runner
from tests.processes import GateHostProcess, clean_env, gatemesh, presence
from tests.tasks import caught
from tests.unit.test_reference import NEURON, NEURON_GRADS

pytestmark = pytest.mark.integration

STAGED_QF = "q = x + y; f = q * z"
NEURON_SOURCE = "sigmoid(w0*x0 + w1*x1 + w2)"


def start_hosts(url: str, prefix: str, count: int = 3) -> list[GateHostProcess]:
    """`count` host processes; the last runs one connection per gate, the others share one each."""
    tag = secrets.token_hex(3)
    names = [f"{prefix}{i}-{tag}" for i in range(count)]
    hosts = [GateHostProcess(url, name) for name in names[:-1]]
    per_gate = ["--broker", url, "--name", names[-1], "--connections", "per-gate"]
    hosts.append(GateHostProcess(url, names[-1], argv=per_gate))
    try:
        for host in hosts:
            host.wait_online()
    except BaseException:
        for host in hosts:
            host.stop()
        raise
    return hosts


@pytest.fixture(scope="module")
def three_hosts(mosquitto_url: str) -> Iterator[list[str]]:
    hosts = start_hosts(mosquitto_url, "h")
    yield [h.name for h in hosts]
    for host in hosts:
        host.stop()


def test_deploy_run_status_undeploy_from_the_cli(mosquitto_url: str, three_hosts: list[str]) -> None:
    name = f"qf-{secrets.token_hex(3)}"
    broker = ["--broker", mosquitto_url]
    done = gatemesh("deploy", STAGED_QF, "--name", name, "--hosts", ",".join(three_hosts), *broker)
    assert done.returncode == 0, done.stderr
    assert "5 gates on 3 host(s)" in done.stdout

    done = gatemesh("run", "--deployed", name, "x=-2", "y=5", "z=-4", "--json", *broker)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"value": -12.0, "grads": {"x": -4.0, "y": -4.0, "z": 3.0}}

    done = gatemesh("status", "--json", *broker)
    state = json.loads(done.stdout)
    deployment = state["deployments"][name]
    assert deployment["state"] == "ready"
    assert {g: v["state"] for g, v in deployment["gates"].items()} == dict.fromkeys("xyzqf", "ready")
    assert {v["host"] for v in deployment["gates"].values()} == set(three_hosts)  # round-robin uses all three
    assert all(state["hosts"][h]["state"] == "online" for h in three_hosts)
    human = gatemesh("status", name, *broker)
    assert human.returncode == 0, human.stderr
    assert "gates of " + name in human.stdout
    alone = json.loads(gatemesh("status", name, "--json", *broker).stdout)
    assert alone["deployments"] == {name: deployment}  # this deployment alone
    for extra in ([], ["--json"]):
        missing = gatemesh("status", "no-such", *extra, *broker)
        assert missing.returncode == 1
        assert "no deployment named 'no-such' (deployments: " in missing.stderr  # json or not
        assert name in missing.stderr

    again = gatemesh("deploy", STAGED_QF, "--name", name, "--hosts", ",".join(three_hosts), *broker)
    assert again.returncode == 0, again.stderr
    assert " ".join(again.stderr.split()) == (  # replaced: said, not silent
        f"replacing deployment {name} ({deployment['circuit_id']}, 5 gates on {', '.join(three_hosts)}): "
        "its runs in flight fail"
    )
    deployment = json.loads(gatemesh("status", name, "--json", *broker).stdout)["deployments"][name]
    circuit_id = deployment["circuit_id"]
    assert asyncio.run(_answers_to_a_feed(mosquitto_url, circuit_id, "x")) == [topic(circuit_id, "fwd", "x")]
    done = gatemesh("undeploy", name, *broker)
    assert done.returncode == 0, done.stderr
    left = asyncio.run(read_retained(BrokerAddress.parse(mosquitto_url), [f"gatemesh/{circuit_id}/#"]))
    assert left == {}
    assert asyncio.run(_answers_to_a_feed(mosquitto_url, circuit_id, "x")) == []  # the hosts stopped the gates
    assert name not in json.loads(gatemesh("status", "--json", *broker).stdout)["deployments"]

    done = gatemesh("run", "--deployed", name, "x=1", "y=2", "z=3", *broker)
    assert done.returncode == 1
    assert f"no deployment named {name!r}" in done.stderr


def test_deploying_onto_hosts_that_are_not_online_names_them_and_how_they_stand(
    mosquitto_url: str, three_hosts: list[str]
) -> None:
    """It said only "waited 0.5 s for the hosts h1, h9 ...; online: ...", not which was missing."""
    ghost = f"ghost-{secrets.token_hex(3)}"
    wanted = f"{three_hosts[0]},{ghost}"
    done = gatemesh(
        "deploy", "x * y", "--name", ghost, "--hosts", wanted, "--timeout", "0.5", "--broker", mosquitto_url
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"waiting up to 0.5 s for {three_hosts[0]}, {ghost} (online now: ")  # not silence
    said = " ".join(done.stderr.split())
    assert (
        f"waited 0.5 s for the hosts {three_hosts[0]}, {ghost} on {mosquitto_url}; not online: {ghost} (never seen"
        in said
    )
    assert f"Start one with `gatemesh host --name {ghost} --broker {mosquitto_url}`" in said
    # a run on hosts for itself says the same: it said "no deployment named 'run-circuit-...'", the
    # failure of taking back a deployment its deploy never made
    ran = gatemesh("run", "x * y", "x=1", "y=2", "--hosts", wanted, "--timeout", "0.5", "--broker", mosquitto_url)
    assert ran.returncode == 1
    assert "no deployment named" not in ran.stderr, ran.stderr
    assert f"not online: {ghost} (never seen" in " ".join(ran.stderr.split())


async def test_a_run_on_a_deployment_undeployed_or_replaced_meanwhile_fails_at_once_saying_so(
    mosquitto_url: str,
) -> None:
    """Undeploying or replacing a deployment while a run is in flight: the run waited out its
    whole timeout, then blamed lost probe answers. Something else published on the record's
    topic (an empty live message, another deployment's record) is not a deletion: the runner
    reads the record again, and the run goes on."""
    slow = GateHostProcess(mosquitto_url, None, argv=["--broker", mosquitto_url, "--faults", "delay=400ms"])
    names = [f"going-{secrets.token_hex(3)}", f"replaced-{secrets.token_hex(3)}"]
    broker = BrokerAddress.parse(mosquitto_url)
    x_times_y = compile_source("x * y")
    try:
        await asyncio.to_thread(slow.wait_online)
        other = await deploy_to_hosts(
            compile_source("x + y"), f"other-{secrets.token_hex(3)}", broker, hosts=[slow.name]
        )
        for name in names:
            await deploy_to_hosts(x_times_y, name, broker, hosts=[slow.name])
            async with on_deployment(name, broker) as runner, asyncio.TaskGroup() as group:
                run = group.create_task(caught(runner.run({"x": 2.0, "y": 3.0}, timeout=30)))
                await asyncio.sleep(0.2)  # the gates hold each message back 0.4 s
                async with client(broker) as mqtt:  # not the record's: live, not retained
                    await mqtt.publish(deployment_topic(name), b"", qos=QOS)
                    await mqtt.publish(deployment_topic(name), head_of(other).model_dump_json().encode(), qos=QOS)
                done = await run
                assert isinstance(done, RunResult), done
                assert done.grads == {"x": 3.0, "y": 2.0}
                assert runner.gone == ""
                run = group.create_task(caught(runner.run({"x": 2.0, "y": 3.0}, timeout=30)))
                await asyncio.sleep(0.2)
                started = time.monotonic()
                if name == names[0]:
                    await undeploy(name, broker)
                    said = f"deployment {name} .* was undeployed \\(or is being replaced"
                else:
                    await deploy_to_hosts(compile_source("x - y"), name, broker, hosts=[slow.name])
                    said = (
                        f"deployment {name} .* was (undeployed \\(or is being replaced|replaced by another deployment)"
                    )
                gone = await run
                assert isinstance(gone, DeploymentGone), gone
                assert re.search(said, str(gone))
                assert time.monotonic() - started < 5  # at once, not after 30 s
                assert gone.run in str(gone)
                with pytest.raises(DeploymentGone, match=said):  # and every later run
                    await runner.run({"x": 2.0, "y": 3.0}, timeout=30)
    finally:
        slow.stop()


async def test_a_runner_reads_its_deployments_record_on_connecting_and_again_after_a_failed_read(
    mosquitto_url: str,
) -> None:
    """A record deleted while the runner was not connected sends it nothing, and a read that
    failed (a slow or restarting broker) was not tried again: runs waited out their timeout."""
    answers: list[str | Exception] = [BrokerError("the broker is restarting"), "was undeployed"]
    asked = 0

    async def check() -> str:
        nonlocal asked
        asked += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch = RecordWatch("elsewhere", check)
    circuit = compile_source("x * y")
    async with open_runner(circuit, "elsewhere.0", BrokerAddress.parse(mosquitto_url), record_watch=watch) as runner:
        async with asyncio.timeout(10):  # no message on the record's topic: it reads it as it connects
            while not runner.gone:  # noqa: ASYNC110 (the runner's state, not an event of the test's)
                await asyncio.sleep(0.05)
        assert (asked, runner.gone) == (2, "was undeployed")  # the failed read, then one more
        with pytest.raises(DeploymentGone, match=r"deployment elsewhere \(elsewhere.0\) was undeployed"):
            await runner.run({"x": 2.0, "y": 3.0}, timeout=30)


def test_a_deploy_whose_gates_never_say_ready_says_what_is_left_and_where_to_look(mosquitto_url: str) -> None:
    """A host that is online but does not answer (stopped, here): the deploy said only "1 gate(s)
    not ready after 1 s: x (on h)", not that it was taken back, nor what to look at."""
    frozen = GateHostProcess(mosquitto_url, f"frozen-{secrets.token_hex(3)}")
    name = f"unready-{secrets.token_hex(3)}"
    try:
        frozen.wait_online()
        os.kill(frozen.process.pid, signal.SIGSTOP)
        done = gatemesh(
            "deploy", "x * 2", "--name", name, "--hosts", frozen.name, "--timeout", "1", "--broker", mosquitto_url
        )
    finally:
        os.kill(frozen.process.pid, signal.SIGCONT)
        frozen.stop()
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"not ready after 1 s: const_1 (on {frozen.name}), f (on {frozen.name}), x (on {frozen.name})" in said, said
    assert f"; nothing of deployment {name} is left on the hosts; a host whose gates do not answer may be hung" in said
    assert name not in json.loads(gatemesh("status", "--json", "--broker", mosquitto_url).stdout)["deployments"]


def test_explain_tells_each_message_in_order_with_its_host(mosquitto_url: str, three_hosts: list[str]) -> None:
    name = f"explained-{secrets.token_hex(3)}"
    broker = ["--broker", mosquitto_url]
    hosts = ",".join(three_hosts)
    done = gatemesh("deploy", STAGED_QF, "--name", name, "--hosts", hosts, "--placement", "by-layer", *broker)
    assert done.returncode == 0, done.stderr
    try:
        done = gatemesh("run", "--deployed", name, "x=-2", "y=5", "z=-4", "--explain", *broker)
        assert done.returncode == 0, done.stderr
    finally:
        gatemesh("undeploy", name, *broker)
    lines = [line for line in done.stdout.splitlines() if line[:5].strip().rstrip(".").isdigit()]
    assert len(lines) == compile_source(STAGED_QF).messages_per_pass() == 16
    told = [line.split("|", 1)[1].strip() for line in lines]
    where = {line.split("|", 1)[1].strip(): line.split(".", 1)[1].split("|")[0].strip() for line in lines}
    # by-layer over three hosts: the leaves on the first, q on the second, f on the third
    backward_q = "add(q) got grad -4 from mul(f); local grads [1, 1]; sends -4 to x and -4 to y"
    assert backward_q in told
    assert where[backward_q] == three_hosts[1]
    forward_f = "mul(f) got 3 from add(q) and -4 from z; computes 3 * -4 = -12; sends -12 to the orchestrator"
    assert where[forward_f] == three_hosts[2]
    assert told.index(forward_f) < told.index("the orchestrator seeds mul(f) with gradient 1 (df/df = 1)")
    assert told.index("the orchestrator seeds mul(f) with gradient 1 (df/df = 1)") < told.index(backward_q)
    assert set(told[:3]) == {f"the orchestrator feeds input {v}" for v in ("x = -2", "y = 5", "z = -4")}
    # x's report may cross before add(q)'s second send (to y): only the very last is surely a report
    assert "reports" in told[-1], told
    assert sum("reports" in sentence for sentence in told) == 3, told
    assert "x got grad -4 from add(q); reports df/dx = -4 to the orchestrator" in told


async def test_two_orchestrators_share_one_deployment(mosquitto_url: str, three_hosts: list[str]) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    circuit = compile_source(NEURON_SOURCE)
    name = f"shared-{secrets.token_hex(3)}"
    await deploy_to_hosts(circuit, name, broker, hosts=three_hosts)
    rng = random.Random(7)
    try:
        async with on_deployment(name, broker) as first, on_deployment(name, broker) as second:
            jobs = [{k: rng.uniform(-3, 3) for k in NEURON} for _ in range(60)]
            runners = [first, second] * 30
            results = await asyncio.gather(*(r.run(job) for r, job in zip(runners, jobs, strict=True)))
    finally:
        await undeploy(name, broker)
    for job, result in zip(jobs, results, strict=True):
        assert result == evaluate(circuit, job)


async def test_hosts_serve_several_deployments_at_once(mosquitto_url: str, three_hosts: list[str]) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    names = [f"many{i}-{secrets.token_hex(3)}" for i in range(2)]
    await deploy_to_hosts(compile_source(STAGED_QF), names[0], broker, hosts=three_hosts)
    await deploy_to_hosts(compile_source(NEURON_SOURCE), names[1], broker, hosts=1, placement="by-layer")
    try:
        async with on_deployment(names[0], broker) as qf, on_deployment(names[1], broker) as neuron:
            a, b = await asyncio.gather(qf.run({"x": -2, "y": 5, "z": -4}), neuron.run(NEURON))
        with pytest.raises(DeployError, match=rf"no deployment named 'nope'.*deployments: .*{names[0]}, {names[1]}"):
            await find("nope", broker)  # names the deployments there are
    finally:
        for name in names:
            await undeploy(name, broker)
    assert a == RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})
    assert (b.value, b.grads) == (0.7310585786300049, NEURON_GRADS)


async def test_a_killed_host_fails_its_runs_by_name_and_a_redeploy_recovers(mosquitto_url: str) -> None:
    broker = BrokerAddress.parse(mosquitto_url)
    hosts = await asyncio.to_thread(start_hosts, mosquitto_url, "k")
    victim, survivors = hosts[1], [hosts[0].name, hosts[2].name]
    circuit = compile_source(NEURON_SOURCE)
    name = f"killed-{secrets.token_hex(3)}"
    timeout = 5.0
    try:
        record = await deploy_to_hosts(circuit, name, broker, hosts=[h.name for h in hosts])
        victim_gates = record.gates_on(victim.name)
        assert victim_gates
        completed: list[RunResult] = []
        failures: list[tuple[HostLost, float]] = []
        streaming = asyncio.Event()
        killed = False

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                job = {k: rng.uniform(-3, 3) for k in NEURON}
                started = time.monotonic()
                try:
                    result = await runner.run(job, timeout=timeout)
                except HostLost as exc:  # anything else (a timeout above all) fails the test
                    # A host lost before the kill (a survivor starved of CPU past its keepalive on a busy
                    # machine) must fail the test here: returning would leave the killer waiting forever.
                    if not killed:
                        raise AssertionError(f"a host was lost before the victim was killed: {exc}") from exc
                    failures.append((exc, time.monotonic() - started))
                    return
                assert result == evaluate(circuit, job)
                completed.append(result)
                if len(completed) >= 30:
                    streaming.set()

        async def killer() -> None:
            nonlocal killed
            async with asyncio.timeout(60):
                await streaming.wait()
            killed = True
            await asyncio.to_thread(victim.kill)

        async with on_deployment(name, broker) as runner:
            async with asyncio.TaskGroup() as group:
                for seed in range(4):
                    group.create_task(worker(seed))
                group.create_task(killer())
            assert len(failures) == 4
            for exc, took in failures:
                assert exc.hosts == [victim.name]
                assert exc.gates == victim_gates
                assert victim.name in str(exc)
                assert all(gate in str(exc) for gate in victim_gates)
                assert took < timeout
            with pytest.raises(HostLost, match=victim.name):
                await runner.run(NEURON, timeout=timeout)

        # The same name, a new process: it must not bring back the gates of its previous life.
        async with client(broker) as watcher:
            await watcher.subscribe(topic(record.circuit_id, "ready", "+"), qos=QOS)
            returned = GateHostProcess(mosquitto_url, victim.name)
            hosts.append(returned)
            await asyncio.to_thread(returned.wait_online)
            fresh = await _live_messages(watcher, seconds=1.0)
        assert fresh == []
        view = await read_cluster(broker)
        restarted = "restarted: the new process does not run the old process's gates"
        assert view.lost_hosts(record) == {victim.name: restarted}
        done = await asyncio.to_thread(
            gatemesh, "run", "--deployed", name, *_args(NEURON), "--explain", "--broker", mosquitto_url
        )
        assert done.returncode == 1
        assert f"host {victim.name} restarted" in done.stderr
        assert done.stdout == (  # --explain said nothing: nothing happened, and it says why
            f"  (nothing to tell: no message was sent, as the orchestrator knew that host(s) {victim.name} had gone)\n"
        )

        await deploy_to_hosts(circuit, name, broker, hosts=survivors)
        async with on_deployment(name, broker) as runner:
            for seed in range(20):
                job = {k: random.Random(seed).uniform(-3, 3) for k in NEURON}
                assert await runner.run(job, timeout=timeout) == evaluate(circuit, job)
        assert (await read_cluster(broker)).deployments[name].hosts.keys() == set(survivors)
    finally:
        await undeploy(name, broker)
        for host in hosts:
            host.stop()


async def _answers_to_a_feed(url: str, circuit_id: str, leaf: str) -> list[str]:
    """Feed a leaf of a deployment directly and list what comes back within a second."""
    async with client(BrokerAddress.parse(url)) as mqtt:
        await mqtt.subscribe(f"gatemesh/{circuit_id}/+/+", qos=QOS)
        feed = Feed(circuit=circuit_id, sender=ORCHESTRATOR, run="probe-run", value=1.0)
        await publish_all(mqtt, [(topic(circuit_id, "feed", leaf), feed)])
        return [t for t in await _live_messages(mqtt, seconds=1.0) if "/feed/" not in t]


def test_a_host_paused_until_replaced_under_its_name_stops_when_it_resumes(mosquitto_url: str) -> None:
    """A host paused until the broker declared it offline, and a new process started under its
    name meanwhile: the paused one, resumed, announced itself again over the new one's presence,
    and two processes served one name, `gatemesh status` seeing only the last to speak."""
    name = f"paused-{secrets.token_hex(3)}"
    paused = GateHostProcess(mosquitto_url, name)
    successor: GateHostProcess | None = None
    try:
        paused.wait_online()
        os.kill(paused.process.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30  # the broker declares it lost after 1.5 keep-alives
        while (seen := presence(mosquitto_url, name)) is None or seen.state != "offline":
            assert time.monotonic() < deadline, "the paused host was never declared offline"
            time.sleep(0.2)
        successor = GateHostProcess(mosquitto_url, name)
        serving = successor.wait_online()
        os.kill(paused.process.pid, signal.SIGCONT)
        assert paused.process.wait(timeout=30) == 1
        assert (
            f"error: while this host was away, another process took the name {name!r} (machine "
            f"{serving.machine}, pid {successor.process.pid}, incarnation {serving.incarnation}); this one stops, "
            "and its gates with it: "
            "that one serves the name now"
        ) in paused.stderr()
        still = presence(mosquitto_url, name)
        assert still is not None
        assert (still.state, still.pid, still.incarnation) == ("online", successor.process.pid, serving.incarnation)
    finally:
        if paused.process.poll() is None:
            os.kill(paused.process.pid, signal.SIGCONT)
        paused.stop()
        if successor is not None:
            successor.stop()


def test_gatemesh_host_announces_itself_refuses_a_taken_name_and_says_goodbye(mosquitto_url: str) -> None:
    name = f"cli-host-{secrets.token_hex(3)}"
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "host", "--name", name]
    first = subprocess.Popen([*command, "--broker", mosquitto_url], stderr=subprocess.PIPE, env=clean_env())
    try:
        deadline = time.monotonic() + 20
        while (seen := presence(mosquitto_url, name)) is None or seen.pid != first.pid:
            assert time.monotonic() < deadline, "gatemesh host did not announce itself"
            time.sleep(0.05)
        assert seen.state == "online"
        second = gatemesh("host", "--name", name, "--broker", mosquitto_url)
        assert second.returncode == 1
        assert f"a host named {name!r} is already online" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=10)
    assert first.returncode == 0
    gone = presence(mosquitto_url, name)
    assert gone is not None
    assert (gone.state, gone.reason) == ("offline", "stopped")


async def _live_messages(mqtt: aiomqtt.Client, seconds: float) -> list[str]:
    """Topics of messages published while we listened (retained copies from the past excluded)."""
    seen: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in mqtt.messages:
                if not message.retain:
                    seen.append(message.topic.value)
    except TimeoutError:
        pass
    return seen


def _args(values: dict[str, float]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def test_a_qos_0_host_computes_the_same_and_qos_0_needs_a_shared_connection(mosquitto_url: str) -> None:
    """At most once changes what a lost message costs, not what a pass computes."""
    name = f"qos0-{secrets.token_hex(3)}"
    host = GateHostProcess(mosquitto_url, name, argv=["--broker", mosquitto_url, "--name", name, "--qos", "0"])
    try:
        host.wait_online()
        result, levels = asyncio.run(_run_watching_qos(mosquitto_url, NEURON_SOURCE, name, NEURON))
    finally:
        host.stop()
    assert (result.value, result.grads) == (0.7310585786300049, NEURON_GRADS)
    assert levels == {0}  # a QoS 1 subscriber gets the gates' forward values at the QoS they were sent with
    refused = gatemesh("host", "--qos", "0", "--connections", "per-gate", "--broker", mosquitto_url)
    assert refused.returncode == 1
    assert "--qos 0 needs --connections shared" in refused.stderr


async def _run_watching_qos(url: str, source: str, host: str, inputs: dict[str, float]) -> tuple[RunResult, set[int]]:
    """Deploy on `host`, run once, undeploy; and the QoS levels of the forward values seen meanwhile."""
    broker = BrokerAddress.parse(url)
    deployment = f"d-{secrets.token_hex(3)}"
    record = await deploy_to_hosts(compile_source(source), deployment, broker, hosts=[host])
    try:
        async with client(broker) as watcher, on_deployment(deployment, broker) as runner:
            await watcher.subscribe(topic(record.circuit_id, "fwd", "+"), qos=QOS)
            result = await runner.run(inputs)
            levels: set[int] = set()
            async with asyncio.timeout(5):
                async for message in watcher.messages:
                    levels.add(message.qos)
                    if message.topic.value == topic(record.circuit_id, "fwd", "f"):  # the output: the last one
                        break
            return result, levels
    finally:
        await undeploy(deployment, broker)


def test_a_run_on_hosts_stopped_by_ctrl_c_takes_its_deployment_back(mosquitto_url: str) -> None:
    """`gatemesh run --hosts` deploys for one run: a Ctrl-C during the run left the deployment
    and its gates on the hosts (its undeploy was cancelled with the run), in silence."""
    name = f"slow-{secrets.token_hex(3)}"
    argv = ["--broker", mosquitto_url, "--name", name, "--faults", "delay=3000ms"]
    slow = GateHostProcess(mosquitto_url, name, argv=argv)
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "run", "x*y", "x=1", "y=2"]
    command += ["--hosts", name, "--timeout", "30", "--broker", mosquitto_url]
    try:
        slow.wait_online()
        running = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=clean_env())
        deadline = time.monotonic() + 20
        ours: list[str] = []
        while not ours and time.monotonic() < deadline:  # deployed, and its run under way
            status = json.loads(gatemesh("status", "--json", "--broker", mosquitto_url).stdout)
            ours = [deployment for deployment, state in status["deployments"].items() if name in state["hosts"]]
            time.sleep(0.2)
        assert ours, "the run never deployed"
        time.sleep(0.5)
        running.send_signal(signal.SIGINT)
        _, stderr = running.communicate(timeout=20)
        assert running.returncode == 130, stderr
        status = json.loads(gatemesh("status", "--json", "--broker", mosquitto_url).stdout)
        assert [deployment for deployment in status["deployments"] if deployment in ours] == [], stderr
    finally:
        slow.stop()


def test_a_timeout_on_a_host_that_injects_faults_says_they_may_be_why(mosquitto_url: str) -> None:
    """A host dropping messages: the timeout said "add(q) did not answer", and a student read a
    dead gate where its answer had been dropped by its host's fault injector."""
    name = f"lossy-{secrets.token_hex(3)}"
    lossy = GateHostProcess(mosquitto_url, name, argv=["--broker", mosquitto_url, "--name", name, "--faults", "drop=1"])
    broker = ["--broker", mosquitto_url]
    try:
        lossy.wait_online()  # deployed with time to spare: a loaded machine's gates are ready late, not lost
        deployed = gatemesh("deploy", "x*y", "--name", name, "--hosts", name, "--timeout", "30", *broker)
        assert deployed.returncode == 0, deployed.stderr
        done = gatemesh("run", "--deployed", name, "x=1", "y=2", "--timeout", "1", *broker)
    finally:
        gatemesh("undeploy", name, *broker)
        lossy.stop()
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    assert said.endswith(
        f"; the fault injector of host(s) {name} (drop=1) may have dropped or delayed what is missing, "
        "answers to the probe too (the run's sentences say which)"
    ), said
