"""Watching the runs someone else makes on a deployment: read only, nothing is ever published.

A Watcher is a Runner that starts no run. It subscribes to everything of its deployment (and
its hosts' presence) and adopts each run whose first feed it hears; from then on the Runner's
own bookkeeping follows that run as if it had started it: the output's value, every leaf's
report, a gate's error, a lost host. Its Observer and Recorder hear it as they hear their own
runs. A run its orchestrator gives up on (a Release on the control topic) fails here too,
naming what the gates answered to that orchestrator's probe.

A WatchRecorder traces a watched run whose messages carry clocks (`gatemesh run --trace` or
`--explain`): the gates' events come in their trace batches, as always, and the orchestrator's
are read off the broker: each of its sends is the crossing of its message (the stamp the
message carries is the send's clock), and its receipts are recorded as the Recorder records
its own, on a clock kept level with the sends it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import zip_longest
from typing import NoReturn

from pydantic import ValidationError

from gates.protocol import ORCHESTRATOR, ROOT, Feed, Message, Release, host_topic, topic
from gates.trace_records import describe
from gates.transport import BrokerAddress
from orchestrator.cluster import DeploymentRecord
from orchestrator.errors import RunError
from orchestrator.recorder import Recorder
from orchestrator.result import RunResult
from orchestrator.runner import Runner, _Pending
from orchestrator.standing import describe_status

WATCHED = 8
"""Runs followed at once, at most: when another starts, the oldest is forgotten."""
REMEMBERED = 1000
"""Run ids kept after they are over, so that a late copy of a feed does not start them again."""


class ReadOnly(RunError):
    """A Watcher was asked to publish: it has no account to do it with."""


class Watcher(Runner):
    """Follows the runs that other orchestrators make on one deployment (open it with `runner.connected`)."""

    def __init__(
        self, record: DeploymentRecord, broker: BrokerAddress, on_run: Callable[[str, bool], None] | None = None
    ) -> None:
        super().__init__(record.circuit, record.circuit_id, broker, hosts=record.hosts, placement=record.placement)
        self.record = record
        self.on_run = on_run
        """Called with (run, traced) as a run is adopted, before any of its messages is handled."""
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.inputs: dict[str, dict[str, float]] = {}
        """run -> the inputs its feeds gave, as they arrive."""
        self._feed_prefix = topic(self.deployment, "feed", "")
        self._control = topic(self.deployment, "control")
        self._over: dict[str, None] = {}

    def subscriptions(self) -> list[str]:
        return [f"{ROOT}/{self.deployment}/+/+", self._control, *(host_topic(h) for h in self.hosts)]

    async def publish(
        self, batch: object, *, retain: bool = False, confirm: bool = False
    ) -> NoReturn:  # a Watcher starts, probes and releases nothing
        raise ReadOnly(f"watching deployment {self.record.name}: a watcher publishes nothing", "")

    # -- what arrives ---------------------------------------------------------------------

    def on_message(self, name: str, raw: bytes) -> None:
        if raw and name.startswith(self._feed_prefix):
            self._on_feed(name, raw)
        elif raw and name == self._control:
            self._on_control(raw)
        super().on_message(name, raw)

    def _reads(self, kind: str, gate: str | None) -> bool:
        """The orchestrator's own messages too (feeds, the seed, probes, releases): the
        WatchRecorder rebuilds its sends from them."""
        return kind in ("feed", "grad", "control") or super()._reads(kind, gate)

    def _on_feed(self, name: str, raw: bytes) -> None:
        try:
            feed = Feed.model_validate_json(raw)
        except ValidationError:
            return  # the Runner logs it
        if feed.sender != ORCHESTRATOR or feed.circuit != self.deployment:
            return
        if feed.run not in self._pending and feed.run not in self._over:
            self._adopt(feed.run, traced=feed.clock is not None)
        leaf = name[len(self._feed_prefix) :]
        if feed.value is not None and feed.run in self.inputs and leaf in self.circuit.inputs:
            self.inputs[feed.run][leaf] = feed.value

    def _on_control(self, raw: bytes) -> None:
        try:
            release = Release.model_validate_json(raw)
        except ValidationError:
            return  # a probe, or junk
        pending = self._pending.get(release.run)
        if pending is None or release.sender != ORCHESTRATOR:
            return
        waiting = []
        for g in self.circuit.order:
            status = pending.statuses.get(g.id)
            if status is None or status.state != "finished":
                waiting.append(f"{g.op}({g.id}) {describe_status(status)}")
        shown = "; ".join(waiting[:8]) + (f"; and {len(waiting) - 8} more" if len(waiting) > 8 else "")
        told = f"; not finished: {shown}" if waiting else ""
        pending.fail(RunError(f"run {release.run} was given up by the orchestrator that started it{told}", release.run))

    # -- runs -----------------------------------------------------------------------------

    def _adopt(self, run: str, *, traced: bool) -> None:
        loop = asyncio.get_running_loop()
        while len(self._pending) >= WATCHED:
            self.forget(next(iter(self._pending)))
        pending = _Pending(loop.create_future(), loop.create_future(), set(self.circuit.leaves))
        self._pending[run] = pending
        self.inputs[run] = {}
        if self.lost:
            pending.fail(self.host_lost_error(run))
        if self.on_run is not None:
            self.on_run(run, traced)
        self.started.put_nowait(run)

    def forget(self, run: str) -> None:
        """Stop following `run` (a later copy of its feeds does not start it again)."""
        pending = self._pending.pop(run, None)
        if pending is not None:
            pending.fail(RunError(f"run {run}: no longer followed (a newer run started)", run))
        self.inputs.pop(run, None)
        self._over[run] = None
        while len(self._over) > REMEMBERED:
            del self._over[next(iter(self._over))]

    async def follow(self, run: str) -> RunResult:
        """The result of adopted run `run`, once every leaf has reported (GateFailed, HostLost or
        RunError if it fails, as the Runner that started it sees it fail)."""
        pending = self._pending.get(run)
        if pending is None:
            raise RunError(f"run {run} is not followed (it is over, or was forgotten for newer runs)", run)
        try:
            value = await pending.value
            await pending.done
            return RunResult(value=value, grads={name: pending.grads[name] for name in self.circuit.inputs})
        finally:
            self.forget(run)


class WatchRecorder(Recorder):
    """Records runs another orchestrator makes: its sends are read off the crossings of its messages."""

    def on_message(self, topic_name: str, message: Message, payload: bytes, *, crossed: bool = True) -> None:
        run = getattr(message, "run", None)
        clock = self._clocks.get(run) if isinstance(run, str) else None
        stamp = message.clock
        if clock is not None and stamp is not None and not self.clock_fits(topic_name, stamp):
            return
        if clock is not None and stamp is not None and message.sender == ORCHESTRATOR:
            assert isinstance(run, str)
            sent = describe(topic_name, message, self.dest(topic_name))
            if sent is not None:
                clock.lamport = max(clock.lamport, stamp.lamport)  # level with the orchestrator's own clock
                clock.vc = [max(pair) for pair in zip_longest(clock.vc, stamp.vc, fillvalue=0)]
                self._local("send", run, stamp, msg=sent)
        super().on_message(topic_name, message, payload, crossed=crossed)
