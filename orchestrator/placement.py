"""Which host runs which gate: round-robin, by layer, or a placement file.

- round-robin: gates in topological order dealt to the hosts in turn. Neighbouring gates
  land on different hosts, so almost every message crosses between hosts: the most
  distributed layout, good for seeing the traffic.
- by-layer: the circuit's layers (a gate's layer is its longest distance from a leaf) cut
  into as many contiguous bands as there are hosts. Messages cross hosts only where one band
  meets the next: the layout a pipeline would use.
- a file (JSON or YAML) mapping every gate id to a host name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator.circuit import CIRCUIT_SUFFIXES, YAML_SUFFIXES, GateDef, too_long_number
from orchestrator.errors import DeployError

STRATEGIES = ("round-robin", "by-layer")


class Graph(Protocol):
    """What placing needs of a circuit (a scalar Circuit, or a TensorCircuit)."""

    @property
    def gates(self) -> Sequence[GateDef]: ...

    @property
    def order(self) -> Sequence[GateDef]: ...

    @property
    def by_id(self) -> Mapping[str, GateDef]: ...


def place(circuit: Graph, hosts: Sequence[str], strategy: str) -> dict[str, str]:
    """gate id -> host name for every gate; `strategy` is a strategy name or a file path."""
    if not hosts:
        raise DeployError("there are no hosts to place gates on")
    if strategy == "round-robin":
        return {g.id: hosts[i % len(hosts)] for i, g in enumerate(circuit.order)}
    if strategy == "by-layer":
        layer = layers(circuit)
        bands = max(layer.values()) + 1
        return {gid: hosts[depth * len(hosts) // bands] for gid, depth in layer.items()}
    if strategy.lower().endswith(CIRCUIT_SUFFIXES):  # a placement file is read as a circuit file is
        return checked(circuit, hosts, _read(Path(strategy)), source=strategy)
    raise DeployError(f"placement {strategy!r}: use {' or '.join(STRATEGIES)}, or a .json/.yaml file")


def layers(circuit: Graph) -> dict[str, int]:
    """Each gate's layer: 0 for leaves, else one more than its deepest input."""
    layer: dict[str, int] = {}
    for g in circuit.order:
        layer[g.id] = 1 + max((layer[s] for s in g.inputs), default=-1)
    return layer


def checked(circuit: Graph, hosts: Sequence[str], data: Any, *, source: str) -> dict[str, str]:
    """A user's placement, accepted only if it places every gate, and only on the given hosts."""
    like = 'a placement is a mapping of gate id to host name, like {"q": "h1"}'
    if not isinstance(data, dict):
        raise DeployError(f"{source}: {like}")
    wrong = next(((k, v) for k, v in data.items() if not (isinstance(k, str) and isinstance(v, str))), None)
    if wrong is not None:
        raise DeployError(f"{source}: {like}; not {wrong[0]!r}: {wrong[1]!r}")
    unknown = sorted(set(data) - set(circuit.by_id))
    if unknown:
        raise DeployError(f"{source}: not gates of this circuit: {', '.join(unknown[:10])}")
    missing = [g.id for g in circuit.gates if g.id not in data]
    if missing:
        raise DeployError(f"{source}: places no host for gate(s) {', '.join(missing[:10])}")
    offline = sorted(set(data.values()) - set(hosts))
    if offline:
        raise DeployError(
            f"{source}: host(s) {', '.join(offline)} are not among the hosts to deploy on ({', '.join(hosts)}): "
            "name them in --hosts too (started and online)"
        )
    return {g.id: data[g.id] for g in circuit.gates}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path}: cannot read placement file: {exc}") from exc
    try:
        return yaml.safe_load(text) if path.suffix.lower() in YAML_SUFFIXES else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path}: not a valid placement file: {exc}") from exc
    except RecursionError as exc:
        raise DeployError(f"{path}: not a valid placement file: nested too deeply") from exc
    except ValueError as exc:  # a number too long to read
        raise DeployError(f"{path}: not a valid placement file: {too_long_number(text) or exc}") from exc
