"""Host names: every default name is valid (a container's hostname often starts with a digit),
and an invalid --name is one clear line that states the rule, not a traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gates.host import GateHost, InvalidHostName, default_name
from gates.protocol import NAME_PATTERN, NAME_RULE, HostPresence
from gates.transport import BrokerAddress
from tests.processes import gatemesh

NOWHERE = BrokerAddress.parse("mqtt://127.0.0.1:1")  # never connected to: names fail before that


def is_valid(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


@pytest.mark.parametrize(
    ("machine", "pid", "expected"),
    [
        ("62d33df8f11e", 1, "host-62d33df8f11e-1"),  # a container: its id, and python is pid 1
        ("vm", 4711, "host-vm-4711"),
        ("node-1.example.org", 7, "host-node-1.example.org-7"),
        ("a b/c+d#", 3, "host-a-b-c-d--3"),
    ],
)
def test_default_name(machine: str, pid: int, expected: str) -> None:
    assert default_name(machine, pid) == expected
    assert is_valid(expected)


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**31))
def test_every_default_name_is_valid(machine: str, pid: int) -> None:
    name = default_name(machine, pid)
    assert is_valid(name), name
    assert name.endswith(f"-{pid}")  # the pid survives a long hostname: names stay unique per process
    HostPresence(host=name, incarnation="0123abcd", state="online", machine=machine, pid=pid)


def test_this_machines_default_name_is_valid() -> None:
    assert is_valid(default_name())


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("h1", True),
        ("_h", True),
        ("H.x-y_z", True),
        ("h" * 128, True),
        ("h" * 129, False),  # 128 characters at most
        ("1h", False),  # a letter or '_' first
        ("-h", False),
        (".h", False),
        ("h/1", False),  # then letters, digits, '_', '.' or '-' only
        ("h+", False),
        ("h#", False),
        ("h 1", False),
        ("h\n", False),
        ("", False),
    ],
)
def test_the_pattern_is_the_rule_in_words(name: str, valid: bool) -> None:
    """NAME_PATTERN checks what NAME_RULE says: a case for each clause of the words."""
    assert is_valid(name) is valid


def test_the_rule_in_words() -> None:
    assert NAME_RULE == "a letter or '_' followed by letters, digits, '_', '.' or '-', 128 characters at most"


@pytest.mark.parametrize("name", ["62d33df8f11e-1", "a/b", "h" * 129, ""])
def test_an_invalid_name_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidHostName) as refused:
        GateHost(name, NOWHERE)
    assert str(refused.value) == f"invalid host name {name!r}: a host name must be {NAME_RULE}"


@pytest.mark.parametrize("name", ["orchestrator", "broker"])
def test_the_names_traces_give_the_orchestrator_and_the_broker_are_no_hosts_names(name: str) -> None:
    """A host named orchestrator: --explain said "orchestrator | add(q) got -2 from x ..."."""
    said = f"^invalid host name '{name}': orchestrator and broker are not gate hosts$"
    with pytest.raises(InvalidHostName, match=said):
        GateHost(name, NOWHERE)


def test_a_valid_name_is_accepted() -> None:
    assert GateHost("h1", NOWHERE).name == "h1"


def test_the_host_process_states_the_rule_and_exits() -> None:
    """What a container with a bad --name shows in its log: one line, exit status 1."""
    done = subprocess.run(
        [sys.executable, "-m", "gates", "--broker", "mqtt://127.0.0.1:1", "--name", "62d33df8f11e-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == f"error: invalid host name '62d33df8f11e-1': a host name must be {NAME_RULE}\n"


def test_gatemesh_host_states_the_rule_too() -> None:
    done = gatemesh("host", "--name", "1h", "--broker", "mqtt://127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr == f"error: invalid host name '1h': a host name must be {NAME_RULE}\n"
    empty = gatemesh("host", "--name", "", "--broker", "mqtt://127.0.0.1:1")  # was replaced by host-<machine>-<pid>
    assert empty.returncode == 1
    assert empty.stderr == f"error: invalid host name '': a host name must be {NAME_RULE}\n"
