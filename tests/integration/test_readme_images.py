"""The README's pictures are what the documented commands make from the checked-in traces, and a
fresh run of the same command draws the same circuit figure."""

from __future__ import annotations

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
