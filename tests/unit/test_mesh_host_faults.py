"""A training step lost on a host says what that host's faults are, as its presence announces them."""

from __future__ import annotations

from gates.protocol import HostPresence
from gates.transport import BrokerAddress
from orchestrator import mlp
from orchestrator.tensor_mesh import MeshEngine

INCARNATION = "0123abcd"


def test_a_hosts_faults_are_said_and_a_drop_is_blamed_only_when_it_drops() -> None:
    circuit = mlp.build(4)
    engine = MeshEngine(
        circuit, "c", BrokerAddress.parse("mqtt://127.0.0.1:1"), hosts={"h": INCARNATION}, placement={"W1": "h"}
    )

    def announces(faults: str) -> str:
        engine._on_presence(HostPresence(host="h", incarnation=INCARNATION, state="online", faults=faults))
        return engine._faulty(["W1"])

    assert announces("dup=0.5,delay=0-10ms") == "; host h injects faults dup=0.5,delay=0-10ms"  # nothing lost
    assert announces("drop=0.2,seed=3") == (
        "; host h injects faults drop=0.2,seed=3: a lost message fails its step (training does not retry)"
    )
    assert announces("") == ""  # started again without faults
