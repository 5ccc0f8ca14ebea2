"""Placement strategies: which host runs which gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.compiler import compile_source
from orchestrator.errors import DeployError
from orchestrator.placement import layers, place

QF = compile_source("q = x + y; f = q * z")
HOSTS = ["h1", "h2", "h3"]


def test_round_robin_deals_gates_in_topological_order() -> None:
    order = [g.id for g in QF.order]
    assert place(QF, HOSTS, "round-robin") == {gid: HOSTS[i % 3] for i, gid in enumerate(order)}


def test_by_layer_cuts_the_layers_into_contiguous_bands() -> None:
    assert layers(QF) == {"x": 0, "y": 0, "z": 0, "q": 1, "f": 2}
    assert place(QF, HOSTS, "by-layer") == {"x": "h1", "y": "h1", "z": "h1", "q": "h2", "f": "h3"}
    assert set(place(QF, ["only"], "by-layer").values()) == {"only"}
    deep = compile_source("a = x + 1; b = a * 2; c = b + 3; d = c * 4; e = d + 5")
    by_layer = place(deep, ["h1", "h2"], "by-layer")
    assert [by_layer[g] for g in "abcde"] == ["h1", "h1", "h2", "h2", "h2"]


def test_a_placement_file_must_place_every_gate_on_a_live_host(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("x: h1\ny: h1\nz: h2\nq: h2\nf: h3\n")
    assert place(QF, HOSTS, str(good))["f"] == "h3"
    shouted = tmp_path / "GOOD.YML"  # suffixes in any case, as for circuit files
    shouted.write_text(good.read_text())
    assert place(QF, HOSTS, str(shouted)) == place(QF, HOSTS, str(good))
    cases = {
        "missing.json": ('{"x": "h1"}', r"places no host for gate\(s\) y, q, z, f"),
        "unknown.json": ('{"x": "h1", "nope": "h1"}', "not gates of this circuit: nope"),
        "offline.json": (
            '{"x": "h9", "y": "h1", "z": "h1", "q": "h1", "f": "h1"}',
            r"h9 are not among the hosts to deploy on \(h1, h2, h3\): name them in --hosts too",
        ),
        "shape.json": ('["h1"]', "a placement is a mapping of gate id to host name"),
        "entry.json": ('{"x": "h1", "y": 5}', r"to host name, like \{\"q\": \"h1\"\}; not 'y': 5$"),  # which one
        "syntax.json": ("{", "not a valid placement file"),
        "long.json": ('{"x": ' + "9" * 5000 + "}", "line 1, column 7: a number of 5,000 digits is too long to read"),
        "deep.json": ("[" * 100_000 + "]" * 100_000, "not a valid placement file: nested too deeply"),
    }
    for filename, (text, message) in cases.items():
        path = tmp_path / filename
        path.write_text(text)
        with pytest.raises(DeployError, match=message):
            place(QF, HOSTS, str(path))


def test_unknown_strategies_and_no_hosts_are_clear_errors() -> None:
    with pytest.raises(DeployError, match="use round-robin or by-layer"):
        place(QF, HOSTS, "random")
    with pytest.raises(DeployError, match="no hosts"):
        place(QF, [], "round-robin")
