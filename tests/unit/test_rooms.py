"""The house plan's rooms and who may import whom (README, "How it is built"), read from the code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
ROOMS = ("gates", "broker", "orchestrator", "viz", "web")
MAY_IMPORT = {
    "gates": {"gates"},
    "broker": {"broker"},
    "orchestrator": {"orchestrator", "gates", "broker"},
    "viz": {"viz", "orchestrator", "gates"},
    "web": set(ROOMS),
}
DOORS = {"orchestrator/cli_draw.py": {"viz"}, "orchestrator/cli_serve.py": {"web"}}
"""The command line's two doors to the rooms above the orchestrator: `draw`/`export` and `serve`."""
DOOR_MODULES = tuple(name.removesuffix(".py").replace("/", ".") for name in DOORS)


def rooms_imported(path: Path) -> set[str]:
    """The rooms a module imports, anywhere in it (a function's import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ROOMS)


def test_every_room_imports_only_what_the_house_plan_lets_it() -> None:
    breaches = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            extra = rooms_imported(path) - MAY_IMPORT[room] - DOORS.get(name, set())
            if extra:
                breaches.append(f"{name} imports {', '.join(sorted(extra))}")
    assert breaches == []


def test_the_doors_are_used_and_nothing_above_the_orchestrator_goes_back_through_them() -> None:
    """Each door imports its room (else the exception would be stale), and no module of viz or web
    imports the command line's modules (the doors stay one-way)."""
    for name, rooms in DOORS.items():
        assert rooms <= rooms_imported(ROOT / name), name
    back = [
        str(path.relative_to(ROOT))
        for room in ("viz", "web")
        for path in (ROOT / room).rglob("*.py")
        if any(
            isinstance(node, ast.ImportFrom) and node.module in ("orchestrator.cli", *DOOR_MODULES)
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert back == []
