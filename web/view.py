"""What the page shows of a run (RunView), what one connected page has been sent (Client), and the
answers that need no run: a compile check, a stuck stepped run said as what it is."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from orchestrator.circuit import Circuit
from orchestrator.compiler import Compiled, compile_program
from orchestrator.errors import CompileError
from orchestrator.recorder import Recorder
from orchestrator.result import Arrived, RunResult
from viz.caption import formula
from web import render
from web.commands import Run

_COMPILING = threading.Lock()
LOG_LINES = 400
ARRIVED_ROWS = 100
"""Inputs a failed run's result box lists at most (the page shows fewer, and says how many more)."""
"""Sentences a page is sent (the latest; the numbering says how many came before)."""


@dataclass
class RunView:
    """Everything the page shows of the current run."""

    request: Run | None = None
    status: str = "idle"
    title: str = ""
    where: str = ""
    run: str = ""
    inputs: dict[str, float] = field(default_factory=dict)
    circuit: Circuit | None = None
    recorder: Recorder | None = None
    result: RunResult | None = None
    arrived: Arrived | None = None
    """A failed run's value and gradients that did arrive."""
    error: str = ""
    compile_error: dict[str, object] | None = None
    by: str = ""
    """The page that started the run (Client.token): the others' forms follow it."""
    stuck: bool = False
    sentences: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    said: int = 0
    progress: render.Progress | None = None
    summary: dict[str, object] | None = None
    """The circuit counted (gates, ops, hosts, messages a pass): what the page says at any size."""
    started: float = field(default_factory=time.monotonic)

    def say(self, sentence: str) -> None:
        self.sentences.append(sentence)
        self.said += 1

    def arrived_view(self) -> dict[str, object] | None:
        """A failed run's numbers that did arrive, for the result box: the value, and each input's
        gradient or null, in the circuit's order (the first ARRIVED_ROWS: a deployment may have
        thousands of inputs, and the page's inputs may be one "blank inputs" value)."""
        if self.arrived is None or self.circuit is None:
            return None
        inputs = self.circuit.inputs
        rows = [[name, self.arrived.grads.get(name)] for name in inputs[:ARRIVED_ROWS]]
        return {"value": self.arrived.value, "grads": rows, "inputs": len(inputs)}


class Client:
    """One connected page: what it has been sent, and its direct replies."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.replies: list[dict[str, object]] = []
        self.token = secrets.token_hex(6)
        """Names the page to itself: a run it started is not one to follow."""
        self.gone = ""
        """Why the session this page is in is over (its room closed): said, then the socket closes."""

    def reply(self, message: dict[str, object]) -> None:
        self.replies.append(message)
        self.wake.set()

    def leave(self, why: str) -> None:
        """The page's session is over: tell it why and close its socket (it connects again)."""
        self.gone = why
        self.reply({"type": "problem", "message": why})


def compile_alone(source: str) -> Compiled:
    """compile_program, one at a time: it raises the process's recursion limit while it parses, and
    two parses in two threads at once trip CPython 3.11's AST depth check (a SystemError)."""
    with _COMPILING:
        return compile_program(source)


async def compiled(source: str) -> dict[str, object]:
    """The page's answer to Compile: the circuit's inputs, or where the source is wrong."""
    try:
        program = await asyncio.to_thread(compile_alone, source)
    except CompileError as exc:
        return {"type": "compiled", "ok": False, "line": exc.line, "column": exc.column, "message": str(exc)}
    circuit = program.circuit
    return {
        "type": "compiled",
        "ok": True,
        "warnings": list(program.warnings),
        "inputs": circuit.inputs,
        "gates": len(circuit.gates),
        "formula": formula(circuit),
    }


def stuck_message(message: str) -> str:
    """A stepped run's RunTimeout, said as what it is: nothing left to deliver."""
    _, _, waiting = message.partition("not finished: ")
    return f"nothing is left to deliver, so the run can never finish; still waiting: {waiting or message}"
