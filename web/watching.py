"""Watching a live deployment from the page: the runs others make on it, as they happen.

The server follows the deployment with a Watcher (orchestrator/watch.py) on a connection of its
own; with `--secure`, the read-only watcher's account, so watching can publish nothing. Each run
someone starts there (`gatemesh run --deployed NAME x=-2 ...` from a terminal) becomes the
page's run: its sentences, its progress, its value and gradients as text and, when its messages
carry clocks and the circuit is small enough, its pictures, all from the same Recorder, Explainer
and viz/ code as the page's own runs. A newer run replaces the one shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from gates.protocol import Message
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.cluster import DeploymentRecord
from orchestrator.errors import RunError
from orchestrator.recorder import Listener, explain_to
from orchestrator.runner import Observer, connected
from orchestrator.watch import Watcher, WatchRecorder
from viz.caption import formula
from web import render
from web.view import RunView

SHOWN_INPUTS = 10
"""Inputs named in a watched run's title, at most."""


@dataclass(frozen=True)
class Stage:
    """What a watched run needs from the session: the same hooks its own runs use."""

    show: Callable[[RunView], None]
    """Make this the page's run."""
    touch: Callable[[str], None]
    say: Callable[[str], None]
    on_event: Listener
    observer: Callable[[Circuit, Mapping[str, str]], Observer]
    """Counts an untraced run's messages and tells them as sentences."""
    trace_limit: int


class DeploymentWatch:
    """Follows one deployment until cancelled; `serve()` holds the connection."""

    def __init__(self, record: DeploymentRecord, broker: BrokerAddress, stage: Stage) -> None:
        self.record = record
        self.stage = stage
        self.where = f"deployment {record.name}, watched" + (f" as {broker.username}" if broker.username else "")
        self.formula = formula(record.circuit)
        self.watcher = Watcher(record, broker, on_run=self._adopted)
        self.views: dict[str, RunView] = {}

    async def serve(self) -> NoReturn:
        waiting = RunView(status="connecting", title=self.formula, where=self.where, circuit=self.record.circuit)
        self.stage.show(waiting)
        async with connected(self.watcher), asyncio.TaskGroup() as group:
            waiting.status = "watching"
            waiting.title = (
                f"{self.formula}: waiting for a run made elsewhere (gatemesh run --deployed {self.record.name} ...)"
            )
            self.stage.touch("run")
            following: asyncio.Task[None] | None = None
            while True:
                run = await self.watcher.started.get()
                while not self.watcher.started.empty():  # several began at once: the newest is shown
                    run = self.watcher.started.get_nowait()
                if following is not None:
                    following.cancel()
                following = group.create_task(self._follow(run))

    def _adopted(self, run: str, traced: bool) -> None:
        """A run has started (its first feed is here, not yet handled): show it from that message on."""
        circuit, watcher = self.record.circuit, self.watcher
        view = RunView(
            status="running",
            title=f"{self.formula}: a run made elsewhere",
            where=self.where,
            run=run,
            circuit=circuit,
            inputs=watcher.inputs[run],
            progress=render.Progress.of(circuit),
        )
        self.views = {run: view}
        if traced and len(circuit.gates) <= self.stage.trace_limit:
            recorder = WatchRecorder()
            recorder.attach(circuit, self.record.circuit_id, self.record.placement)
            recorder.listeners.append(self.stage.on_event)
            explain_to(recorder, self.stage.say)
            recorder.begin(run, {})
            watcher.recorder, watcher.observer, view.recorder = recorder, None, recorder
        else:  # no clocks (or too many gates to trace): counted and told, not drawn
            counted = self.stage.observer(circuit, self.record.placement)

            def observe(name: str, message: Message) -> None:
                if getattr(message, "run", None) == run:  # not an older run still in flight
                    counted(name, message)

            watcher.recorder, watcher.observer = None, observe
        self.stage.show(view)

    async def _follow(self, run: str) -> None:
        view = self.views.get(run)
        if view is None:  # a newer run is shown already
            return
        try:
            view.result = await self.watcher.follow(run)
            view.status = "done"
        except RunError as exc:
            view.status, view.error = "failed", str(exc)
        recorder = view.recorder
        if recorder is not None:
            recorder.end(run, view.result, RuntimeError(view.error) if view.error else None)
            with contextlib.suppress(Exception):
                await recorder.drain(0.5 if view.result else 0.2)
        given = ", ".join(f"{name}={value:g}" for name, value in list(view.inputs.items())[:SHOWN_INPUTS])
        more = f" and {len(view.inputs) - SHOWN_INPUTS} more" if len(view.inputs) > SHOWN_INPUTS else ""
        view.title = f"{self.formula} at {given}{more}: a run made elsewhere" if given else view.title
        self.stage.touch("run")
