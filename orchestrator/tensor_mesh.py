"""Training steps over the mesh: the trainer's side of the tensor frames.

A MeshEngine speaks to a deployed tensor circuit only through the broker, on one MQTT
session of its own (gates/mqtt311.py). A step: feed every parameter the step's trigger and
learning rate and every data input its batch; wait for the loss; seed its gradient with 1.0;
wait until every parameter has reported its value after the step (and the scores have
arrived). The parameters' reports are also how the trainer knows them: a checkpoint is
written from them, no extra round trip.

A gate's definite error fails the step at once, naming the gate; a host of the deployment
that goes offline fails it naming the host and its gates; a step that outlasts its timeout
asks every gate where it stands (Probe/Status) and names what it waits on. There is no
retry: a failed step ends the training, and `--resume` continues from the last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ValidationError

from gates.errors import TransportError
from gates.faults import Faults
from gates.frame import FrameError, FrameHeader, decode, encode
from gates.mqtt311 import Session
from gates.protocol import (
    MESSAGE_ADAPTER,
    ORCHESTRATOR,
    RUN_FAILING_CODES,
    ErrorReport,
    HostPresence,
    Probe,
    Ready,
    Release,
    Status,
    host_topic,
    parse_topic,
    topic,
)
from gates.tensor_ops import Array
from gates.transport import BrokerAddress
from gates.transport import encode as encode_json
from orchestrator.cluster import host_problem
from orchestrator.errors import (
    BrokerError,
    GateFailed,
    GatesNotReady,
    HostLost,
    RunConnectionLost,
    RunTimeout,
    broker_failed,
)
from orchestrator.reference import listed
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.train import StepOutcome

log = logging.getLogger(__name__)

PROBE_WINDOW = 0.5


@dataclass
class _Step:
    """The step in flight, as the trainer sees it."""

    run: str
    step: int
    loss: asyncio.Future[float]
    done: asyncio.Future[None]
    waiting: set[str]
    """Parameters that have not reported step + 1 yet, and observed gates not heard yet."""
    observed: dict[str, Array] = field(default_factory=dict)
    statuses: dict[str, Status] = field(default_factory=dict)

    def fail(self, error: BaseException) -> None:
        for future in (self.loss, self.done):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: the step may not be awaiting this one

    def heard(self, what: str) -> None:
        self.waiting.discard(what)
        if not self.waiting and self.loss.done() and not self.done.done():
            self.done.set_result(None)


class MeshEngine:
    """Takes training steps on a deployed tensor circuit; open it with `open_engine`."""

    def __init__(
        self,
        circuit: TensorCircuit,
        circuit_id: str,
        broker: BrokerAddress,
        *,
        hosts: Mapping[str, str] | None = None,
        placement: Mapping[str, str] | None = None,
        step_timeout: float = 30.0,
    ) -> None:
        self.circuit = circuit
        self.circuit_id = circuit_id
        self.broker = broker
        self.hosts = dict(hosts or {})
        self.placement = dict(placement or {})
        self.step_timeout = step_timeout
        self.lost: dict[str, str] = {}
        """host -> what happened to it."""
        self.host_faults: dict[str, str] = {}
        """host -> the faults its fault injector injects (`gatemesh host --faults`), as it announces them."""
        self._session: Session | None = None
        self._broken: BaseException | None = None
        self._not_ready = {g.id for g in circuit.gates}
        self._ready_changed = asyncio.Event()
        self._values: dict[str, tuple[str, int, Array]] = {}
        """parameter -> (run, step, tensor) of its latest report."""
        self._reported = asyncio.Event()
        self._pending: _Step | None = None

    def subscriptions(self) -> list[str]:
        c = self.circuit_id
        watched = [topic(c, "fwd", g) for g in (self.circuit.output, *self.circuit.observe)]
        mine = [topic(c, kind, "+") for kind in ("report", "error", "status", "ready")]
        return [*watched, *mine, *(host_topic(h) for h in self.hosts)]

    # -- sending ----------------------------------------------------------------------------

    def _frame(
        self, kind: str, name: str, run: str, step: int, array: Array | None, **fields: object
    ) -> tuple[str, bytes]:
        header = FrameHeader.model_validate(
            {
                "kind": kind,
                "circuit": self.circuit_id,
                "sender": ORCHESTRATOR,
                "run": run,
                "step": step,
                "shape": None if array is None else array.shape,
                **fields,
            }
        )
        return name, encode(header, array)

    async def publish(self, batch: Sequence[tuple[str, bytes]], *, retain: bool = False, confirm: bool = False) -> None:
        """Send on the session; with `confirm`, return once the broker has every message."""
        if self._broken is not None:
            raise RunConnectionLost(f"the connection to the broker at {self.broker} is gone: {self._broken}", "")
        session = self._session
        assert session is not None, "open the engine with open_engine"
        try:
            await session.publish_all(batch, retain, confirm=confirm)
        except TimeoutError as exc:
            raise BrokerError(f"the broker at {self.broker} {exc}") from None
        except TransportError as exc:
            raise RunConnectionLost(f"the connection to the broker at {self.broker} broke: {exc}", "") from exc

    async def publish_json(self, batch: Iterable[tuple[str, BaseModel | None]], *, retain: bool = False) -> None:
        await self.publish([(name, encode_json(message)) for name, message in batch], retain=retain, confirm=True)

    # -- readiness and loading --------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Return once every gate has said Ready; else name the ones that did not."""
        try:
            async with asyncio.timeout(timeout):
                while self._not_ready:
                    if self.lost:
                        raise self.host_lost("deploying")
                    self._ready_changed.clear()
                    await self._ready_changed.wait()
        except TimeoutError:
            silent = sorted(self._not_ready)
            shown = listed([f"{g} (on {self.placement[g]})" if g in self.placement else g for g in silent], 10)
            raise GatesNotReady(f"{len(silent)} tensor gate(s) not ready after {timeout:g} s: {shown}") from None

    async def load(self, params: Mapping[str, Array], step: int) -> None:
        """Give every parameter actor its tensor as of `step`, and wait for each to confirm it."""
        run = f"set-{secrets.token_hex(6)}"
        await self.publish(
            [self._frame("set", topic(self.circuit_id, "feed", p), run, step, params[p]) for p in self.circuit.params]
        )
        try:
            async with asyncio.timeout(self.step_timeout):
                while missing := [p for p in self.circuit.params if self._values.get(p, ("",))[0] != run]:
                    if self.lost:
                        raise self.host_lost(run)
                    self._reported.clear()
                    await self._reported.wait()
        except TimeoutError:
            by_host: dict[str, list[str]] = {}
            for p in missing:
                by_host.setdefault(self.placement.get(p, ""), []).append(p)
            shown = "; ".join(", ".join(ps) + (f" on {host}" if host else "") for host, ps in by_host.items())
            message = f"parameter(s) {shown} did not take their values within {self.step_timeout:g} s"
            raise RunTimeout(message + self._faulty(missing), run, missing) from None

    def params(self) -> dict[str, Array]:
        return {name: self._values[name][2] for name in self.circuit.params}

    # -- steps ------------------------------------------------------------------------------

    async def step(self, step: int, lr: float, feeds: Mapping[str, Array]) -> StepOutcome:
        run = f"s{step}-{secrets.token_hex(4)}"
        if self.lost:
            raise self.host_lost(run, step)
        loop = asyncio.get_running_loop()
        waiting = {*self.circuit.params, *self.circuit.observe}
        pending = self._pending = _Step(run, step, loop.create_future(), loop.create_future(), waiting)
        c = self.circuit_id
        batch = [self._frame("feed", topic(c, "feed", p), run, step, None, lr=lr) for p in self.circuit.params]
        batch += [self._frame("feed", topic(c, "feed", name), run, step, feeds[name]) for name in self.circuit.inputs]
        try:
            async with asyncio.timeout(self.step_timeout):
                await self.publish(batch)
                await pending.loss
                seed = self._frame(
                    "backward", topic(c, "grad", self.circuit.output), run, step, np.asarray(1.0), port=0
                )
                await self.publish([seed])
                await pending.done
        except TimeoutError:
            raise await self._timed_out(pending) from None
        finally:
            self._pending = None
        return StepOutcome(pending.loss.result(), pending.observed)

    def host_lost(self, run: str, step: int | None = None) -> HostLost:
        parts = []
        for host in sorted(self.lost):
            on_it = [g for g, h in self.placement.items() if h == host]
            shown = listed(on_it, 8)
            parts.append(f"host {host} {self.lost[host]}; its {len(on_it)} gate(s) {shown} are unreachable")
        where = f"step {step}" if step is not None else run
        gates = [g for g, h in self.placement.items() if h in self.lost]
        message = f"{where} failed: {'; '.join(parts)}"
        return HostLost(message, run, sorted(self.lost), gates)

    async def _timed_out(self, pending: _Step) -> RunTimeout:
        """Ask every gate where the step stands, free their state, and say what it waits on."""
        with contextlib.suppress(RunConnectionLost, BrokerError):
            await self.publish_json([(topic(self.circuit_id, "control"), self._control(Probe, pending.run))])
            await asyncio.sleep(PROBE_WINDOW)
            await self.publish_json([(topic(self.circuit_id, "control"), self._control(Release, pending.run))])
        stuck = []
        for name, status in sorted(pending.statuses.items()):
            if status.state == "waiting_inputs":
                stuck.append(f"{name} waits for {', '.join(status.missing_inputs)}")
            elif status.state == "waiting_grads":
                stuck.append(f"{name} has {status.grads_received} of {status.grads_expected} gradient(s)")
        waiting = sorted(pending.waiting) + ([] if pending.loss.done() else [self.circuit.output])
        message = (
            f"step {pending.step} (run {pending.run}) did not finish within {self.step_timeout:g} s; "
            f"not heard from: {', '.join(waiting)}" + (f"; {'; '.join(stuck[:8])}" if stuck else "")
        )
        return RunTimeout(message + self._faulty(self.placement), pending.run, waiting)

    def _faulty(self, gates: Iterable[str]) -> str:
        """The faults of the hosts `gates` run on, with "; " (or ""): a drop fails a step."""
        hosts = sorted({self.placement[g] for g in gates if g in self.placement} & self.host_faults.keys())
        if not hosts:
            return ""
        told = "; ".join(f"host {host} injects faults {self.host_faults[host]}" for host in hosts)
        dropping = any(_drops(self.host_faults[host]) for host in hosts)
        return f"; {told}" + (": a lost message fails its step (training does not retry)" if dropping else "")

    def _control(self, kind: type[Probe] | type[Release], run: str) -> BaseModel:
        return kind(circuit=self.circuit_id, sender=ORCHESTRATOR, run=run)

    # -- incoming ---------------------------------------------------------------------------

    def on_message(self, name: str, raw: bytes) -> None:
        if not raw:
            return
        if name.startswith(host_topic("")):
            with contextlib.suppress(ValidationError):
                self._on_presence(HostPresence.model_validate_json(raw))
            return
        parsed = parse_topic(name)
        if parsed is None:
            return
        kind, gate = parsed[1], parsed[2]
        if kind in ("fwd", "report"):
            try:
                frame = decode(raw)
            except FrameError as exc:
                log.warning("ignored a bad frame on %s: %s", name, exc)
                return
            if frame.array is not None and gate == frame.header.sender:
                self._on_frame(kind, frame.header, frame.array)
            return
        try:
            message = MESSAGE_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            log.warning("ignored a malformed message on %s: %s", name, exc.errors()[0]["msg"])
            return
        pending = self._pending
        match message:
            case Ready(sender=sender):
                self._not_ready.discard(sender)
                self._ready_changed.set()
            case Status(run=run) if pending is not None and run == pending.run:
                pending.statuses[message.sender] = message
            case ErrorReport(run=run) if (
                pending is not None and run == pending.run and message.code in RUN_FAILING_CODES
            ):
                said = message.message.removeprefix(f"{message.sender}: ")  # a domain error names its gate too
                reason = f"step {pending.step}: gate {message.sender} failed: {said}"
                pending.fail(GateFailed(reason, run, message.sender, message.code))
            case ErrorReport():  # one that fails a step already failed (by the first report) is not news
                level = logging.INFO if message.code in RUN_FAILING_CODES else logging.WARNING
                log.log(level, "gate %s reported %s: %s", message.sender, message.code, message.message)

    def _on_frame(self, kind: str, header: FrameHeader, array: Array) -> None:
        pending = self._pending
        if kind == "report":
            if header.kind == "value" and header.sender in self.circuit.param_shapes:
                previous = self._values.get(header.sender)
                if previous is None or header.step >= previous[1]:
                    self._values[header.sender] = (header.run, header.step, array)
                    self._reported.set()
                if pending is not None and header.run == pending.run and header.step == pending.step + 1:
                    pending.heard(header.sender)
            return
        if pending is None or header.run != pending.run or header.kind != "forward":
            return
        if header.sender == self.circuit.output and not pending.loss.done():
            pending.loss.set_result(float(array))
            pending.heard(self.circuit.output)
        if header.sender in self.circuit.observe and header.sender not in pending.observed:
            pending.observed[header.sender] = array
            pending.heard(header.sender)

    def _on_presence(self, presence: HostPresence) -> None:
        expected = self.hosts.get(presence.host)
        if expected is None:
            return
        if presence.faults:
            self.host_faults[presence.host] = presence.faults
        else:  # started again without faults
            self.host_faults.pop(presence.host, None)
        problem = host_problem(expected, presence)
        if problem is None:
            self.lost.pop(presence.host, None)
            return
        if presence.host in self.lost:
            return
        self.lost[presence.host] = problem
        log.info("host %s %s", presence.host, problem)  # the step in flight, or the next, fails saying so
        self._ready_changed.set()
        self._reported.set()
        if self._pending is not None:
            self._pending.fail(self.host_lost(self._pending.run, self._pending.step))

    def attach(self, session: Session) -> None:
        """Use `session` (subscribed already); a lost session fails the step in flight and every later one."""
        self._session = session
        session.lost.add_done_callback(lambda lost: self._connection_lost(lost.result()))

    def _connection_lost(self, error: TransportError) -> None:
        self._broken = error
        if self._pending is not None:
            message = f"step {self._pending.step}: lost the broker at {self.broker}: {error}"
            self._pending.fail(RunConnectionLost(message, self._pending.run))


@contextlib.asynccontextmanager
async def open_engine(
    circuit: TensorCircuit,
    circuit_id: str,
    broker: BrokerAddress,
    *,
    hosts: Mapping[str, str] | None = None,
    placement: Mapping[str, str] | None = None,
    step_timeout: float = 30.0,
) -> AsyncIterator[MeshEngine]:
    """A MeshEngine with its session open and subscribed; closed on exit."""
    engine = MeshEngine(circuit, circuit_id, broker, hosts=hosts, placement=placement, step_timeout=step_timeout)
    try:
        session = await Session.open(broker, engine.on_message)
        await session.subscribe(engine.subscriptions())
    except TransportError as exc:
        raise broker_failed(broker, exc) from exc
    engine.attach(session)
    try:
        yield engine
    finally:
        session.close()


def _drops(faults: str) -> bool:
    """Whether a host's faults (as it announces them) drop messages; faults it cannot read may."""
    plan = Faults.announced(faults)
    return plan is None or plan.drop > 0
