"""Where the page's runs happen: gates in the server's process, on the hosts it started, or on a
live deployment. A target stays deployed from one run to the next, until the page asks for
another circuit, other faults or another place; a run with the page's faults gets a target of
its own (a seeded fault injector's choices go on from run to run: fresh gates repeat them).

Each target's deployment is an async context (deploy.in_process, deploy.on_hosts,
deploy.on_deployment) held open by a task of its own, so a run can come and go without
redeploying, and closing it undeploys exactly as the CLI would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.security import SecureDir
from gates.faults import Faults
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.deploy import in_process, on_deployment, on_hosts
from orchestrator.errors import BrokerError, GatemeshError, GatesNotReady, unwrap
from orchestrator.recorder import Recorder
from orchestrator.runner import Runner

log = logging.getLogger(__name__)
DEPLOY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Place:
    """What a target is: a circuit here or on hosts (with faults), or a deployment by name."""

    kind: str
    """here, hosts or deployment."""
    circuit: Circuit | None = None
    deployment: str = ""
    faults: str = ""
    hosts: tuple[str, ...] = ()
    circuit_id: str = ""
    """A deployment's id as the broker's records say it (blank: not heard of): a deployment
    undeployed and deployed again under its name is another one."""

    def same(self, other: Place) -> bool:
        return (
            (self.kind, self.deployment, self.circuit_id, self.faults, self.hosts)
            == (
                other.kind,
                other.deployment,
                other.circuit_id,
                other.faults,
                other.hosts,
            )
            and (self.circuit is None) == (other.circuit is None)
            and (
                self.circuit is None or other.circuit is None or self.circuit.model_dump() == other.circuit.model_dump()
            )
        )

    def label(self) -> str:
        if self.kind == "deployment":
            return f"deployment {self.deployment}"
        where = "gate hosts " + ", ".join(self.hosts) if self.kind == "hosts" else "actors in the server's process"
        return where + (f", faults {self.faults}" if self.faults else "")


@dataclass
class Target:
    place: Place
    runner: Runner
    close: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    broken: str = ""

    @property
    def circuit(self) -> Circuit:
        return self.runner.circuit

    @property
    def placement(self) -> dict[str, str]:
        return self.runner.placement


class Targets:
    """At most one target at a time; `get` reuses it or replaces it."""

    def __init__(
        self, broker: BrokerAddress, spawn: Callable[..., asyncio.Task[None]], secure: SecureDir | None = None
    ) -> None:
        self.broker = broker
        self.secure = secure
        """With a secured broker: the ACL is rewritten for each deployment on hosts."""
        self.spawn = spawn
        """Starts a task in the session's task group."""
        self.current: Target | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        """Targets still undeploying: the next one opens only once they are gone."""

    async def get(self, place: Place) -> Target:
        async with self._lock:
            current = self.current
            # a seeded fault injector's choices go on from run to run: with the page's faults each
            # run gets gates of its own, so that running again repeats them (as `gatemesh run` does);
            # on hosts too, started with the page's faults (a deployment's faults are its hosts' own)
            fresh = place.kind in ("here", "hosts") and bool(place.faults)
            stale = fresh or (
                current is not None and (current.broken != "" or bool(current.runner.lost) or current.runner.gone != "")
            )
            if current is not None and current.place.same(place) and not stale:
                return current
            await self.close()
            try:
                target = await self._open(place)
            except GatesNotReady:  # they had their time: again would only double the wait
                raise
            except BrokerError as exc:  # a first connection the broker closed at once: tried again, once
                log.warning("opening %s: %s; trying once more", place.label(), exc)
                target = await self._open(place)
            self.current = target
            return target

    async def _open(self, place: Place) -> Target:
        ready: asyncio.Future[Target] = asyncio.get_running_loop().create_future()
        task = self.spawn(self._hold(place, ready))
        try:
            target = await ready
        except BaseException:
            # not cancelled: a deploy cut short would undeploy while the next target deploys (its
            # ACL written from a view without the new gates); `_hold` ends itself once it sees
            # `ready` cancelled, and the next target waits for it
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            raise
        target.task = task
        return target

    async def close(self) -> None:
        """Close the current target and wait until its gates are gone. A caller cancelled while it
        waits stops waiting, and the target still finishes undeploying in its own task (awaiting
        the task itself would cancel it too, cutting the undeploy short and leaving its gates)."""
        target, self.current = self.current, None
        if target is not None and target.task is not None:
            target.close.set()
            self._closing.add(target.task)
            target.task.add_done_callback(self._closing.discard)
        if self._closing:  # this one, and any whose closer was cancelled before it finished
            await asyncio.wait(set(self._closing))

    def _opened(self, place: Place) -> contextlib.AbstractAsyncContextManager[Runner]:
        # hears everything of its deployment on its own connection: the page instruments it
        # afresh for each run (Runner.instrument)
        recorder = Recorder(taps=False)
        if place.kind == "deployment":
            return on_deployment(place.deployment, self.broker, recorder=recorder)
        assert place.circuit is not None
        if place.kind == "hosts":
            hosts = list(place.hosts)
            return on_hosts(
                place.circuit, self.broker, hosts=hosts, timeout=DEPLOY_TIMEOUT, recorder=recorder, secure=self.secure
            )
        faults = Faults.parse(place.faults) if place.faults else None
        return in_process(place.circuit, self.broker, faults=faults, recorder=recorder, connections="shared")

    async def _hold(self, place: Place, ready: asyncio.Future[Target]) -> None:
        target: Target | None = None
        try:
            async with self._opened(place) as runner:
                target = Target(place, runner)
                if ready.cancelled():  # whoever opened it stopped waiting, in this very turn: nobody will close it
                    return
                ready.set_result(target)
                await target.close.wait()
        except (GatemeshError, BaseExceptionGroup, OSError, ValueError) as exc:
            cause = unwrap(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if not ready.done():
                ready.set_exception(cause if isinstance(cause, Exception) else RuntimeError(str(cause)))
            elif target is not None:
                target.broken = str(cause)
                log.warning("the deployment for %s failed: %s", place.label(), cause)
