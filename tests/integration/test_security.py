"""A secured Mosquitto: accounts, an ACL generated from the circuit and its placement, no anonymous clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from broker.launch import mosquitto
from broker.security import ORCHESTRATOR_USER, WATCHER_FILE, WATCHER_USER, SecureDir, host_rules, host_user
from gates.errors import ConnectionLost, Refused
from gates.mqtt311 import Session
from gates.mux import SharedConnection
from gates.protocol import Backward, topic
from gates.transport import QOS, BrokerAddress, client, publish_all, read_retained, subscribe_all
from orchestrator.compiler import compile_source
from orchestrator.deploy import deploy_to_hosts, grants, on_deployment, undeploy
from orchestrator.result import RunResult
from tests.processes import GateHostProcess, gatemesh

pytestmark = pytest.mark.integration

QF = RunResult(value=-12.0, grads={"x": -4.0, "y": -4.0, "z": 3.0})


@pytest.fixture
def accounts() -> Iterator[SecureDir]:
    """Accounts for two hosts, in a directory the broker can read after dropping root."""
    with tempfile.TemporaryDirectory(prefix="gatemesh-secure-") as path:
        Path(path).chmod(0o755)
        yield SecureDir.create(Path(path) / "secure", ["h0", "h1"])


async def test_accounts_and_acl_refuse_strangers_and_forgeries(accounts: SecureDir) -> None:
    circuit = compile_source("q = x + y; f = q * z")
    with mosquitto(secure_dir=accounts.directory) as url:
        anonymous = BrokerAddress.parse(url)
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed|[Bb]ad user"):
            async with client(anonymous):
                pass
        wrong = anonymous.model_copy(update={"username": ORCHESTRATOR_USER, "password": "guess"})
        with pytest.raises(aiomqtt.MqttError):
            async with client(wrong):
                pass

        hosts = [GateHostProcess(accounts.url(host_user(h), url), h) for h in ("h0", "h1")]
        try:
            for host in hosts:
                await asyncio.to_thread(host.wait_online)
            orchestrator = BrokerAddress.parse(accounts.url(ORCHESTRATOR_USER, url))
            record = await deploy_to_hosts(circuit, "guarded", orchestrator, hosts=["h0", "h1"], secure=accounts)
            cid = record.circuit_id
            async with on_deployment("guarded", orchestrator) as runner:
                assert await runner.run({"x": -2, "y": 5, "z": -4}) == QF

                on_h0 = record.gates_on("h0")
                _, writable = host_rules("h0", grants(record))
                target = next(g for g in ("x", "y", "z", "q", "f") if f"gatemesh/{cid}/grad/{g}" not in writable)
                h0 = BrokerAddress.parse(accounts.url(host_user("h0"), url))
                async with client(orchestrator) as spy:
                    await subscribe_all(spy, [topic(cid, "grad", target)])
                    forged = Backward(circuit=cid, sender=on_h0[-1], run="0123456789abcdef", port=0, grad=1e6)
                    # The broker drops the forgery (and may cut the forger off for trying).
                    with contextlib.suppress(aiomqtt.MqttError):
                        async with client(h0) as forger:
                            await publish_all(forger, [(topic(cid, "grad", target), forged)])
                    heard = await _heard(spy, seconds=1.0)
                    assert heard == []
                    # the same message from an account that may write there does arrive: the spy works
                    await publish_all(spy, [(topic(cid, "grad", target), forged)])
                    assert await _heard(spy, seconds=5.0, stop_after=1) == [topic(cid, "grad", target)]
                async with client(h0) as snoop:  # h0's account hears only what h0's gates need
                    await snoop.subscribe(f"gatemesh/{cid}/#", qos=QOS)
                    results = [await runner.run({"x": -2, "y": 5, "z": -4}) for _ in range(5)]
                    snooped = set(await _heard(snoop, seconds=1.0))
                assert results == [QF] * 5
                readable, _ = host_rules("h0", grants(record))
                assert snooped
                assert all(any(aiomqtt.Topic(t).matches(f) for f in readable) for t in snooped), snooped
                assert topic(cid, "fwd", "y") not in snooped  # y lives on h1 and feeds only q, also on h1
            await undeploy("guarded", orchestrator, secure=accounts)
            assert cid not in accounts.acl.read_text()
        finally:
            for host in hosts:
                host.stop()


async def _heard(mqtt: aiomqtt.Client, seconds: float, stop_after: int | None = None) -> list[str]:
    topics: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in mqtt.messages:
                topics.append(message.topic.value)
                if stop_after is not None and len(topics) >= stop_after:
                    break
    except TimeoutError:
        pass
    return topics


def test_the_acl_gives_each_host_only_its_own_gates(accounts: SecureDir) -> None:
    circuit = compile_source("q = x + y; f = q * z")
    from orchestrator.cluster import DeploymentRecord

    record = DeploymentRecord(
        name="qf",
        circuit_id="qf.00000000",
        circuit=circuit,
        placement={"x": "h0", "y": "h1", "z": "h0", "q": "h1", "f": "h0"},
        hosts={"h0": "00000000", "h1": "11111111"},
    )
    read, write = host_rules("h1", grants(record))
    c = "gatemesh/qf.00000000"
    assert set(write) == {
        "gatemesh-sys/hosts/h1",
        "gatemesh-sys/sync/#",
        *(f"{c}/{kind}/{g}" for kind in ("fwd", "report", "ready", "status", "error", "trace") for g in ("y", "q")),
        f"{c}/grad/x",
        f"{c}/grad/y",  # q's inputs: its backward contributions
        *(f"{c}/{kind}/{g}" for kind in ("trace", "held/fwd", "held/report") for g in ("y", "q")),
        f"{c}/held/grad/x",  # a stepped run's contributions wait at the held topics
        f"{c}/held/grad/y",
    }
    assert f"{c}/grad/z" not in write  # z is an input of f, on h0
    assert {f"{c}/fwd/x", f"{c}/fwd/y", f"{c}/feed/y", f"{c}/grad/q", f"{c}/control"} <= set(read)
    assert f"{c}/fwd/z" not in read
    accounts.write_acl(grants(record))
    text = accounts.acl.read_text()
    assert "user host-h0" in text
    assert "user host-h1" in text
    assert "user orchestrator\ntopic readwrite gatemesh/#" in text
    watcher = text.split(f"user {WATCHER_USER}\n", 1)[1].split("\n\n", 1)[0]
    assert watcher.splitlines() == ["topic read gatemesh/#", "topic read gatemesh-sys/#"]  # and no write at all


def test_a_directory_made_before_the_watcher_gets_it_added_and_keeps_the_rest(accounts: SecureDir) -> None:
    """An older directory (no watcher, an ACL with a deployment's rules) is upgraded in place."""
    old = {u: p for u, p in accounts.credentials().items() if u != WATCHER_USER}
    (accounts.directory / "credentials.json").write_text(json.dumps(old))
    (accounts.directory / WATCHER_FILE).unlink()
    acl = accounts.acl.read_text().split(f"user {WATCHER_USER}")[0] + "user host-h0\ntopic write gatemesh/old/fwd/x\n"
    accounts.acl.write_text(acl)
    with pytest.raises(ValueError, match=r"made before the read-only watcher account existed; add one with "):
        accounts.watcher()
    refused = gatemesh("serve", "--broker", "mqtt://127.0.0.1:1", "--secure", str(accounts.directory))
    assert refused.returncode == 1
    assert f"add one with `gatemesh secure watcher {accounts.directory}` (the other passwords stay)" in refused.stderr
    added = gatemesh("secure", "watcher", str(accounts.directory))
    assert added.returncode == 0, added.stderr
    assert "added the read-only account 'watcher'" in added.stdout
    assert {u: p for u, p in accounts.credentials().items() if u != WATCHER_USER} == old  # other passwords stay
    user, password = accounts.watcher()
    assert (user, password) == (WATCHER_USER, accounts.credentials()[WATCHER_USER])
    text = accounts.acl.read_text()
    assert text.startswith(acl)  # the rest of the ACL as it was
    assert text.endswith(f"\nuser {WATCHER_USER}\ntopic read gatemesh/#\ntopic read gatemesh-sys/#\n")
    assert [line.split(":")[0] for line in (accounts.directory / "passwd").read_text().splitlines()] == [
        *old,
        WATCHER_USER,
    ]
    again = gatemesh("secure", "watcher", str(accounts.directory))  # twice is once
    assert "has the watcher account already" in again.stdout
    assert accounts.watcher() == (user, password)


async def test_the_watcher_reads_everything_and_its_publishes_never_arrive(accounts: SecureDir) -> None:
    """The watcher's account subscribes to both roots and hears what the orchestrator publishes,
    retained state included. Mosquitto 2.0.11 answers a publish it denies as if it had taken it
    (a QoS 1 PUBACK), drops it, and then closes the watcher's connection: what is asserted here."""
    with mosquitto(secure_dir=accounts.directory) as url:
        orchestrator = BrokerAddress.parse(accounts.url(ORCHESTRATOR_USER, url))
        user, password = accounts.watcher()
        watcher = BrokerAddress.parse(url).model_copy(update={"username": user, "password": password})
        record = topic("watched.0", "fwd", "x")
        async with client(orchestrator) as orch:
            await publish_all(orch, [("gatemesh-sys/deployments/watched", FORGED)], retain=True)
            async with client(watcher) as watching:
                await subscribe_all(watching, ["gatemesh/+/+/+", "gatemesh-sys/#"])  # granted (else this raises)
                assert await _heard(watching, seconds=5.0, stop_after=1) == ["gatemesh-sys/deployments/watched"]
                await publish_all(orch, [(record, FORGED)])
                assert await _heard(watching, seconds=5.0, stop_after=1) == [record]

            await subscribe_all(orch, ["gatemesh/#", "gatemesh-sys/#"])
            await _heard(orch, seconds=0.5)  # the retained record, heard once on subscribing
            session = await Session.open(watcher, lambda topic_name, payload: None)  # the data plane's own session
            try:
                await session.subscribe(["gatemesh/watched.0/+/+"])
                acknowledged = session.publish(record, b'{"forged": true}', confirm=True)
                assert acknowledged is not None
                async with asyncio.timeout(5):
                    await acknowledged  # a PUBACK, as if the publish had been taken
                    lost = await asyncio.shield(session.lost)  # then the broker hangs up
                assert isinstance(lost, ConnectionLost)
                assert str(lost).endswith("closed"), lost
            finally:
                session.close()
            with contextlib.suppress(aiomqtt.MqttError):  # a retained deletion, at QoS 0, from aiomqtt
                async with client(watcher) as deleter:
                    await deleter.publish("gatemesh-sys/deployments/watched", b"", qos=0, retain=True)
                    await deleter.publish("gatemesh-sys/deployments/watched", b"", qos=1, retain=True)
            assert await _heard(orch, seconds=1.0) == []  # nothing the watcher sent reached a subscriber
        kept = await read_retained(orchestrator, ["gatemesh-sys/deployments/+"])
        assert list(kept) == ["gatemesh-sys/deployments/watched"]  # and the retained record is still there


FORGED = Backward(circuit="watched.0", sender="x", run="0123456789abcdef", port=0, grad=1.0)


async def test_the_data_plane_session_is_refused_without_its_account_and_serves_with_it(accounts: SecureDir) -> None:
    """gates/mqtt311.Session speaks CONNECT with credentials itself: a wrong password is refused
    with the broker's reason, and a host's shared connection works with the right one."""
    with mosquitto(secure_dir=accounts.directory) as url:
        h0 = BrokerAddress.parse(accounts.url(host_user("h0"), url))
        for wrong in (h0.model_copy(update={"password": "guess"}), BrokerAddress.parse(url)):
            with pytest.raises(Refused, match="refused the connection: not authorised"):
                await Session.open(wrong, lambda topic, payload: None)
        shared = SharedConnection(h0)
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(shared.serve())
            async with shared.link(["gatemesh-sys/hosts/h0"]):  # a topic h0 may read
                assert shared.gates == 1
            serving.cancel()


def test_a_host_refused_for_its_password_says_so_and_stops(accounts: SecureDir) -> None:
    """A broker that refuses a host's credentials answers for good: the host says so and exits,
    for its shared connection and for per-gate connections, instead of retrying forever."""
    with mosquitto(secure_dir=accounts.directory) as url:
        wrong = url.replace("://", f"://{host_user('h0')}:guess@")
        for connections in ("shared", "per-gate"):
            stopped = gatemesh("host", "--broker", wrong, "--name", "h0", "--connections", connections, timeout=30)
            assert stopped.returncode == 1, stopped.stderr
            assert stopped.stderr.endswith(
                "refused the connection: [code:135] Not authorized; check the user name and password in --broker "
                "(or $GATEMESH_BROKER)\n"
            ), stopped.stderr
            assert "Traceback" not in stopped.stderr


def test_a_host_started_with_another_hosts_account_says_so_and_stops(accounts: SecureDir) -> None:
    """The ACL lets host h1's account announce h1 only: Mosquitto closed the connection after each
    announcement of h0, and the host said "online" again and again, forever (and three times
    before it stopped: it is online once the broker delivers its announcement back to it)."""
    with mosquitto(secure_dir=accounts.directory) as url:
        stopped = gatemesh("host", "--broker", accounts.url(host_user("h1"), url), "--name", "h0", timeout=60)
        assert stopped.returncode == 1, stopped.stderr
        last = stopped.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: the broker at {url} closed this host's connection right after it announced "), (
            last
        )
        assert last.endswith(
            f"3 times in a row (the broker: Disconnected during message iteration): its account ({host_user('h1')}) "
            "may not publish gatemesh-sys/hosts/h0. With accounts and an ACL (`gatemesh secure init`), a host's "
            "account speaks for its own name only: give --name the host that account is for, or use h0's account"
        ), last
        assert "Traceback" not in stopped.stderr
        assert " online at " not in stopped.stderr


async def test_a_runner_closed_while_it_reads_its_deployments_record_closes(accounts: SecureDir) -> None:
    """A runner reads its deployment's record as it connects, on a connection of its own; closed
    during that read (a pass on a secured broker is over first), aiomqtt lost the cancellation
    and the runner never closed: `run --deployed` hung after printing its result."""
    with mosquitto(secure_dir=accounts.directory) as url:
        host = GateHostProcess(accounts.url(host_user("h0"), url), "h0")
        address = BrokerAddress.parse(accounts.url(ORCHESTRATOR_USER, url))
        try:
            await asyncio.to_thread(host.wait_online)
            await deploy_to_hosts(compile_source("(x+y)*z"), "qf", address, hosts=["h0"], secure=accounts)
            for _ in range(20):  # it hung within 3 to 5 of these
                async with asyncio.timeout(10), on_deployment("qf", address) as runner:
                    assert await runner.run({"x": -2.0, "y": 5.0, "z": -4.0}) == QF
        finally:
            host.stop()


def test_secure_init_keeps_a_directorys_accounts_unless_forced_and_checks_host_names(tmp_path: Path) -> None:
    directory = tmp_path / "secure"
    made = gatemesh("secure", "init", str(directory), "--hosts", "h1,h2")
    assert made.returncode == 0, made.stderr
    password = json.loads((directory / "credentials.json").read_text())[host_user("h1")]
    host_line = f"host h1: GATEMESH_BROKER=mqtt://{host_user('h1')}:{password}@HOST:1883 gatemesh host --name h1"
    assert host_line in made.stdout.splitlines()  # the password in the environment, not on the command line
    secret = directory / "credentials.json"
    assert (secret.stat().st_mode & 0o777, (directory / WATCHER_FILE).stat().st_mode & 0o777) == (0o600, 0o600)
    first = json.loads(secret.read_text())
    again = gatemesh("secure", "init", str(directory), "--hosts", "h1,h2,h3")
    assert again.returncode == 1
    assert f"{directory} has accounts already" in again.stderr
    assert "give --force to replace them all" in again.stderr
    assert json.loads(secret.read_text()) == first  # the running hosts' passwords still hold
    forced = gatemesh("secure", "init", str(directory), "--hosts", "h1,h2,h3", "--force")
    assert forced.returncode == 0, forced.stderr
    replaced = json.loads(secret.read_text())
    assert set(replaced) == {*first, host_user("h3")}
    assert all(replaced[user] != password for user, password in first.items())
    bad = gatemesh("secure", "init", str(tmp_path / "other"), "--hosts", "h 1,a/b,ok")
    assert bad.returncode == 1
    assert "--hosts: 'h 1', 'a/b': a host name must be a letter or '_' followed by" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_run_and_status_connect_with_the_orchestrators_account(accounts: SecureDir) -> None:
    """`run --deployed`, `run --hosts` and `status` on a secured broker, as `deploy --secure` does."""
    secure = ["--secure", str(accounts.directory)]
    with mosquitto(secure_dir=accounts.directory) as url:
        host = GateHostProcess(accounts.url(host_user("h0"), url), "h0")
        try:
            host.wait_online()
            deployed = gatemesh("deploy", "(x+y)*z", "--name", "qf", "--hosts", "h0", "--broker", url, *secure)
            assert deployed.returncode == 0, deployed.stderr
            ran = gatemesh("run", "--deployed", "qf", "x=-2", "y=5", "z=-4", "--json", "--broker", url, *secure)
            assert ran.returncode == 0, ran.stderr
            assert RunResult.model_validate_json(ran.stdout) == QF
            anonymous = gatemesh("run", "--deployed", "qf", "x=-2", "y=5", "z=-4", "--broker", url)
            assert anonymous.returncode == 1
            assert "refused the connection: [code:135] Not authorized" in anonymous.stderr
            assert (  # what to do about it
                "this broker wants an account: give --secure DIR (the accounts `gatemesh secure init` made for it) "
                "or mqtt://user:password@host:port" in " ".join(anonymous.stderr.split())
            )
            state = gatemesh("status", "qf", "--json", "--broker", url, *secure)
            assert state.returncode == 0, state.stderr
            assert json.loads(state.stdout)["deployments"]["qf"]["state"] == "ready"
            on_hosts = gatemesh("run", "x*y", "x=2", "y=3", "--hosts", "h0", "--json", "--broker", url, *secure)
            assert on_hosts.returncode == 0, on_hosts.stderr  # the ACL was rewritten for the run's deployment
            assert RunResult.model_validate_json(on_hosts.stdout) == RunResult(value=6.0, grads={"x": 3.0, "y": 2.0})
            here = gatemesh("run", "x*y", "x=2", "y=3", "--broker", url, *secure)
            assert here.returncode == 1
            assert "--secure: gates in this process have no accounts" in here.stderr
        finally:
            gatemesh("undeploy", "qf", "--broker", url, *secure)
            host.stop()
