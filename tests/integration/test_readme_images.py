"""The README's pictures are what the documented commands make from the checked-in traces, and a
fresh run of the same command draws the same circuit figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.processes import gatemesh

pytestmark = pytest.mark.integration

IMG = Path(__file__).parents[2] / "docs" / "img"


@pytest.mark.parametrize(
    ("command", "picture"),
    [
        (["draw", "circuit", "--trace", str(IMG / "qf.jsonl")], "qf-circuit.svg"),
        (["draw", "lamport", str(IMG / "faulty.jsonl")], "faulty-lamport.svg"),
    ],
)
def test_the_checked_in_pictures_are_regenerated_exactly(command: list[str], picture: str, tmp_path: Path) -> None:
    done = gatemesh(*command, "-o", str(tmp_path / picture))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / picture).read_text() == (IMG / picture).read_text()


def test_a_fresh_run_draws_the_same_circuit_figure(mosquitto_url: str, tmp_path: Path) -> None:
    trace = tmp_path / "qf.jsonl"
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", "--broker", mosquitto_url, "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    done = gatemesh("draw", "circuit", "--trace", str(trace), "-o", str(tmp_path / "qf.svg"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "qf.svg").read_text() == (IMG / "qf-circuit.svg").read_text()


def faults_of(trace: Path) -> list[tuple[str, str, str, float | None, str]]:
    """What the injector did, and every send: (type, node, message id, delay, note), sorted."""
    events = [json.loads(line) for line in trace.read_text().splitlines()[1:]]
    kinds = ("send", "drop", "duplicate", "delay", "reorder", "timeout")
    return sorted(
        (e["type"], e["node"], (e.get("msg") or {}).get("id", ""), e.get("delay_ms"), e.get("note", ""))
        for e in events
        if e["type"] in kinds
    )


def test_the_readme_faulty_command_makes_the_checked_in_faults_again(mosquitto_url: str, tmp_path: Path) -> None:
    """The README says running its faulty command again drops, duplicates, delays and reorders the
    same messages by the same amounts (the injector is seeded per gate): the checked-in trace is
    what that command makes today."""
    readme = (IMG.parents[1] / "README.md").read_text()
    faults = re.search(r"--faults (\S+)", readme)
    assert faults is not None
    trace = tmp_path / "faulty.jsonl"
    run = ["run", "(x+y)*z", "x=-2", "y=5", "z=-4", "--faults", faults[1], "--timeout", "1"]
    done = gatemesh(*run, "--broker", mosquitto_url, "--trace", str(trace))
    assert done.returncode == 1  # the drop makes it time out
    assert "did not finish within 1 s" in done.stderr
    found, checked_in = faults_of(trace), faults_of(IMG / "faulty.jsonl")
    assert found == checked_in
    assert {kind for kind, *_ in found} == {"send", "drop", "duplicate", "delay", "reorder", "timeout"}
