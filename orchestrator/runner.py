"""Runs passes over a deployed circuit, speaking to the gates only through the broker.

A run: feed every leaf -> wait for the output gate's forward value -> seed the output's
gradient with 1.0 -> wait until every leaf reports its gradient. Many runs share one
connection and are told apart by run id. A gate's error fails its run at once; a run that
outlasts its timeout asks every gate where it stands (Probe/Status) so the error can name
the gates it is stuck on, then tells them all to forget it (Release).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from gates import errors as transport_errors
from gates.errors import TransportError
from gates.faults import Faults
from gates.lifecycle import Backoff, cancel_and_wait, stay_connected
from gates.mqtt311 import Session
from gates.protocol import (
    MESSAGE_ADAPTER,
    ORCHESTRATOR,
    ROOT,
    RUN_FAILING_CODES,
    Backward,
    ErrorReport,
    Feed,
    Forward,
    GradReport,
    HostPresence,
    Message,
    Probe,
    Ready,
    Release,
    Status,
    TopicKind,
    deployment_topic,
    host_topic,
    parse_topic,
    topic,
)
from gates.trace_records import ENDED_EARLY
from gates.transport import BrokerAddress, encode
from orchestrator.circuit import Circuit
from orchestrator.cluster import host_problem
from orchestrator.errors import (
    DeploymentGone,
    GateFailed,
    GatemeshError,
    GatesNotReady,
    HostLost,
    RunConnectionLost,
    RunError,
    RunTimeout,
    broker_failed,
    unwrap,
)
from orchestrator.recorder import Recorder
from orchestrator.records import RETAINED_RECORD
from orchestrator.reference import check_inputs, listed
from orchestrator.result import Arrived, RunResult
from orchestrator.standing import standing
from orchestrator.tap import Tap

log = logging.getLogger(__name__)

PROBE_WINDOW = 0.5
"""Seconds a timed-out run waits for the gates' Status answers before naming them."""
PROBE_WAIT_PER_GATE = 0.002
"""Seconds more, a gate, it waits for those that have not answered yet (a big circuit on a slow
broker: 1,200 gates on the embedded one answered after the window, and were said not to)..."""
PROBE_WAIT_MAX = 5.0
"""...and at most this long (an answer a fault dropped, or a dead host's, never comes)."""
HOSTS_PREFIX = host_topic("")


@dataclass
class _Pending:
    """One run in flight, as the orchestrator sees it."""

    value: asyncio.Future[float]
    done: asyncio.Future[None]
    waiting_for: set[str]
    grads: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, Status] = field(default_factory=dict)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    """Every gate has answered the probe."""
    deadline: asyncio.Timeout | None = None
    ended_early: bool = False
    """Its wait was ended before its timeout (expire: a stepped run nothing is left to deliver to)."""

    def fail(self, error: BaseException) -> None:
        for future in (self.value, self.done):
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: the run may already have stopped awaiting


Observer = Callable[[str, Message], None]
"""Called with every message of this runner's runs as it crosses the broker (the web page's untraced runs)."""
AnyRunner = TypeVar("AnyRunner", bound="Runner")
Tally = Callable[[str, TopicKind], None]
"""Called with (run, kind) for every message of a run in flight on the deployment's feed, fwd,
grad and report topics, found by the run id in its bytes and never decoded: counting what
crosses costs next to nothing, however large the circuit (`gatemesh serve`'s progress)."""
TALLIED: frozenset[TopicKind] = frozenset(("feed", "fwd", "grad", "report"))


@dataclass(frozen=True)
class RecordWatch:
    """A deployment made by `gatemesh deploy`: its name, and how to read its record again.

    `check` returns "" while the record is still this deployment's, else how it went ("was
    undeployed"). A message on the record's topic is only a reason to look: a live message
    there, empty or another deployment's, need not be the record's deletion or replacement
    (anyone may publish one), so the record itself is read again before any run fails.
    """

    name: str
    check: Callable[[], Awaitable[str]]


QUEUE_HINT_GATES = 500
"""Gates past which readiness that never came may be a broker's queue limit, said so."""


class Runner:
    """Runs passes over one deployment; create it with `open_runner`.

    For a deployment on gate hosts, `hosts` (host -> incarnation) and `placement` (gate ->
    host) let the runner watch the hosts' presence: a host that goes offline or restarts
    fails every run in flight, and every later run, with an error that names it.
    """

    def __init__(
        self,
        circuit: Circuit,
        deployment: str,
        broker: BrokerAddress,
        *,
        hosts: Mapping[str, str] | None = None,
        placement: Mapping[str, str] | None = None,
        recorder: Recorder | None = None,
        record_watch: RecordWatch | None = None,
    ) -> None:
        self.circuit = circuit
        self.deployment = deployment
        self.broker = broker
        self.record_watch = record_watch
        self._record_topic = deployment_topic(record_watch.name) if record_watch is not None else None
        self.gone = ""
        """How the deployment's record went ("was undeployed"), once it has: every run fails then."""
        self._doubt = asyncio.Event()
        """Something on the record's topic was not this deployment's record: read it again."""
        self._session: Session | None = None
        """The current connection (gates/mqtt311.py, the data plane's fast path); new after each reconnection."""
        self.connected = asyncio.Event()
        self.hosts = dict(hosts or {})
        self.host_faults: dict[str, str] = {}
        """What each of the deployment's hosts says its fault injector does (HostPresence.faults)."""
        self.placement = dict(placement or {})
        self.observer: Observer | None = None
        """Told every message of this runner's runs (Runner.instrument: the web page's untraced runs)."""
        self.recorder = recorder
        """Traces every run (orchestrator/recorder.py): clocks on the run's messages, every event recorded."""
        self.tally: Tally | None = None
        self._last_run = ""
        """The run that ended last: its messages may still arrive (a leaf's report can overtake the
        copy, sent to this runner, of the gradient that made it), and the tally counts them too."""
        if recorder is not None:
            self._hear(recorder)
        self.tap: Tap | None = None
        """The recorder's own subscription to every message (orchestrator/tap.py); this connection
        then hears only what runs need. Decided when the runner is made, for that recorder only:
        a byte stream read by two recorders would be cut mid-packet."""
        if recorder is not None and recorder.taps:
            self.tap = Tap(broker, deployment, recorder.on_tapped, recorder.on_tapped_message)
        self.probe_window = PROBE_WINDOW
        self.lost: dict[str, str] = {}
        """host -> what happened to it, for each host of this deployment that is gone."""
        self._pending: dict[str, _Pending] = {}
        self._not_ready: set[str] = {g.id for g in circuit.gates}
        """Gates not heard Ready from yet: kept up to date per message, so waiting is O(1) each."""
        self._awaited: set[str] | None = None
        """While wait_ready waits: the gates it still waits for."""
        self._ready_changed = asyncio.Event()

    def instrument(
        self, *, recorder: Recorder | None = None, observer: Observer | None = None, tally: Tally | None = None
    ) -> None:
        """What hears this runner's next runs, chosen afresh for each (the web page's runners): a
        recorder (attached here to this deployment), an observer or a tally. Such a runner is
        opened with a recorder of no taps, so that it subscribes to every message of its
        deployment whatever is swapped in later (`subscriptions`)."""
        if recorder is not None:
            self._hear(recorder)
        self.recorder, self.observer, self.tally = recorder, observer, tally

    def _hear(self, recorder: Recorder) -> None:
        """`recorder` records this deployment's runs, and names the faults its hosts announce
        (the runner's own table: heard before the recorder came, and after)."""
        recorder.attach(self.circuit, self.deployment, self.placement)
        recorder.host_faults = self.host_faults

    def subscriptions(self) -> list[str]:
        c = self.deployment
        hosts = [host_topic(h) for h in self.hosts]
        if self._record_topic is not None:
            hosts.append(self._record_topic)
        wide = self.recorder is not None and self.tap is None
        if self.observer is not None or wide or self.tally is not None:  # everything
            return [f"{ROOT}/{c}/+/+", topic(c, "control"), *hosts]  # the control topic has one level fewer
        kinds: tuple[TopicKind, ...] = ("report", "error", "status", "ready")
        return [topic(c, "fwd", self.circuit.output), *(topic(c, kind, "+") for kind in kinds), *hosts]

    # -- hosts ----------------------------------------------------------------------------

    def host_lost_error(self, run: str = "") -> HostLost:
        """The error for runs on this deployment once one of its hosts is gone."""
        hosts = sorted(self.lost)
        gates = [g for g, h in self.placement.items() if h in self.lost]
        parts = []
        for host in hosts:
            on_it = [g for g, h in self.placement.items() if h == host]
            shown = listed(on_it, 8)
            parts.append(f"host {host} {self.lost[host]}; its {len(on_it)} gate(s) {shown} are unreachable")
        message = "; ".join(parts) + REDEPLOY
        return HostLost(f"run {run}: {message}" if run else message, run, hosts, gates)

    def _on_presence(self, presence: HostPresence) -> None:
        expected = self.hosts.get(presence.host)
        if expected is None:
            return
        if presence.state == "online":
            self.host_faults[presence.host] = presence.faults
        problem = host_problem(expected, presence)
        if problem is None:  # back online as the same process (a broker restart): its gates are intact
            if self.lost.pop(presence.host, None) is not None:
                log.warning("host %s is back", presence.host)
            return
        if presence.host in self.lost:
            return
        self.lost[presence.host] = problem
        log.info("host %s %s", presence.host, problem)  # every run, now or later, fails saying so
        if self.recorder is not None:
            self.recorder.host_lost(presence.host, problem, list(self._pending))
        for run, pending in self._pending.items():
            pending.fail(self.host_lost_error(run))
        self._ready_changed.set()

    # -- the deployment's record ------------------------------------------------------------

    def _on_record(self, raw: bytes) -> None:
        """A message on the deployment's record topic: its record as retained (heard on
        subscribing), or a reason to read the record again."""
        if raw:
            try:
                if RETAINED_RECORD.validate_json(raw).circuit_id == self.deployment:
                    return
            except ValidationError:
                pass
        self._doubt.set()

    async def _watch_record(self, record: RecordWatch) -> None:
        """Read the record again whenever there is a doubt (and after every connection: a record
        deleted while this runner was away sends nothing); once it is gone, fail every run."""
        backoff = Backoff()
        while not self.gone:
            await self._doubt.wait()
            self._doubt.clear()
            try:
                gone = await record.check()
            except (GatemeshError, TransportError) as exc:  # cannot tell yet: look again, later
                delay = backoff.next()
                log.info("could not read deployment %s's record again (%s); again in %g s", record.name, exc, delay)
                await asyncio.sleep(delay)
                self._doubt.set()
                continue
            backoff.reset()
            if gone:
                self.gone = gone
                log.info("deployment %s %s", record.name, gone)
                for run, pending in self._pending.items():
                    pending.fail(self.gone_error(run))
                self._ready_changed.set()

    def gone_error(self, run: str = "") -> DeploymentGone:
        name = self.record_watch.name if self.record_watch is not None else self.deployment
        message = f"deployment {name} ({self.deployment}) {self.gone}: its gates stop"
        message += "; `gatemesh status` lists what is deployed"
        return DeploymentGone(f"run {run}: {message}" if run else message, run)

    # -- readiness ------------------------------------------------------------------------

    async def wait_ready(self, timeout: float, gates: Iterable[str] | None = None) -> None:
        """Return once every gate (or each of `gates`) has said Ready; else name the ones that did not."""
        self._awaited = set(self._not_ready) if gates is None else {g for g in gates if g in self._not_ready}
        try:
            async with asyncio.timeout(timeout):
                while self._awaited:
                    if self.gone:
                        raise self.gone_error()
                    if self.lost:
                        raise self.host_lost_error()
                    self._ready_changed.clear()
                    await self._ready_changed.wait()
        except TimeoutError:
            silent = sorted(self._awaited)
            shown = ", ".join(f"{g} (on {self.placement[g]})" if g in self.placement else g for g in silent[:10])
            said = f"{len(silent)} gate(s) not ready after {timeout:g} s: {shown}"
            if len(self.circuit.gates) > QUEUE_HINT_GATES:
                said += (  # the Ready messages a runner reads come in one burst, retained
                    f"; a broker with Mosquitto's default queue limit (1,000 messages a client) drops the Ready "
                    f"messages of {len(self.circuit.gates):,} gates: broker/mosquitto.conf lifts it"
                )
            raise GatesNotReady(said) from None
        finally:
            self._awaited = None

    # -- runs -----------------------------------------------------------------------------

    async def run(
        self,
        inputs: Mapping[str, float],
        *,
        timeout: float = 10.0,
        retries: int = 0,
        on_retry: Callable[[str], None] | None = None,
    ) -> RunResult:
        """One forward and backward pass; raises GateFailed, HostLost or RunTimeout instead of hanging.

        A run that times out may be retried from its inputs under a fresh run id (the forward
        pass is deterministic, so a retry can only give the same answer): `retries` more times,
        each told to `on_retry` (a result that needed retries should not look like one that did not).
        """
        check_inputs(self.circuit, inputs)
        for attempt in range(retries + 1):
            try:
                return await self._attempt(inputs, timeout)
            except (RunTimeout, RunConnectionLost) as exc:
                self._trace_end(exc.run, error=exc)
                if attempt == retries:
                    if retries:  # said here, as each retry is: the last error is not the only one
                        exc.args = (f"all {retries + 1} attempts failed; the last: {exc}", *exc.args[1:])
                    raise
                said = f"attempt {attempt + 1} of {retries + 1} failed: {exc}; running it again from its inputs"
                log.info("%s", said)
                if on_retry is not None:
                    on_retry(said)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, inputs: Mapping[str, float], timeout: float) -> RunResult:
        run = secrets.token_hex(8)
        if self.gone:
            raise self.gone_error(run)
        if self.lost:
            raise self.host_lost_error(run)
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), loop.create_future(), set(self.circuit.leaves))
        self._pending[run] = pending
        if self.recorder is not None:
            self.recorder.begin(run, inputs)
        try:
            async with asyncio.timeout(timeout) as pending.deadline:
                await self.connected.wait()
                await self.publish(self._traced(run, self._feeds(run, inputs)))
                await pending.value
                seed = Backward(circuit=self.deployment, sender=ORCHESTRATOR, run=run, port=0, grad=1.0)
                await self.publish(self._traced(run, [(topic(self.deployment, "grad", self.circuit.output), seed)]))
                await pending.done
        except TimeoutError:
            if not self.connected.is_set():
                message = f"run {run}: no connection to the broker at {self.broker} for {timeout:g} s"
                raise RunConnectionLost(message, run) from None
            try:
                late = await self._timed_out(run, pending, timeout)
            except TransportError as exc:  # lost while probing: a lost connection, as above
                message = f"run {run}: the connection to the broker at {self.broker} broke while probing: {exc}"
                raise RunConnectionLost(message, run) from exc
            value = pending.value  # cancelled if the timeout struck while the run awaited it
            if pending.waiting_for or not value.done() or value.cancelled() or value.exception() is not None:
                raise late from None
            # every report arrived while the gates were probed: the run finished, late (a busy machine)
            log.info("run %s finished after its %g s timeout, while its gates were probed", run, timeout)
        except TransportError as exc:
            raise RunConnectionLost(
                f"run {run}: the connection to the broker at {self.broker} broke: {exc}", run
            ) from exc
        except RunError as exc:
            self._trace_end(run, error=exc)
            await self._release(run, lost_is_fine=True)
            raise
        except asyncio.CancelledError:  # nobody waits for it: the gates may forget it (a publish never waits)
            self._interrupted(run)
            await self._release(run, lost_is_fine=True)
            raise
        finally:
            del self._pending[run]
            self._last_run = run
        grads = {name: pending.grads[name] for name in self.circuit.inputs}
        result = RunResult(value=pending.value.result(), grads=grads)
        self._trace_end(run, result)
        return result

    def expire(self, run: str) -> bool:
        """End run `run`'s wait now, as if its timeout had passed: the gates are probed, and the
        RunTimeout names what each still waits for (a stepped run nothing is left to deliver to)."""
        pending = self._pending.get(run)
        if pending is None or pending.deadline is None or pending.deadline.expired():  # probing already
            return False
        pending.ended_early = True
        pending.deadline.reschedule(asyncio.get_running_loop().time())
        return True

    def _traced(self, run: str, batch: Sequence[tuple[str, BaseModel]]) -> list[tuple[str, BaseModel]]:
        """The batch, stamped with the orchestrator's clocks when this run is traced (else as it is)."""
        return self.recorder.stamp(run, batch) if self.recorder is not None else list(batch)

    def _interrupted(self, run: str) -> None:
        """A run cancelled before it ended (Ctrl-C, a Restart): its trace says so, not that it goes on."""
        self._trace_end(run, error=RunError(f"run {run} was interrupted before it finished", run))

    def _trace_end(self, run: str, result: RunResult | None = None, error: BaseException | None = None) -> None:
        if self.recorder is not None:
            self.recorder.end(run, result, error)

    def _feeds(self, run: str, inputs: Mapping[str, float]) -> list[tuple[str, Feed]]:
        feeds = []
        for leaf in self.circuit.leaves:
            value = float(inputs[leaf]) if leaf in inputs else None
            feeds.append(
                (
                    topic(self.deployment, "feed", leaf),
                    Feed(circuit=self.deployment, sender=ORCHESTRATOR, run=run, value=value),
                )
            )
        return feeds

    async def _release(self, run: str, *, lost_is_fine: bool = False) -> None:
        """Tell the gates to forget the run. `lost_is_fine`: the run has failed or was cancelled,
        and a connection lost meanwhile must not hide that (gates evict old runs on their own)."""
        release = Release(circuit=self.deployment, sender=ORCHESTRATOR, run=run)
        try:
            await self.publish(self._traced(run, [(topic(self.deployment, "control"), release)]))
        except TransportError:
            if not lost_is_fine:
                raise

    async def _timed_out(self, run: str, pending: _Pending, timeout: float) -> RunTimeout:
        """Ask the gates where the run stands, free their state, and say who it waits on."""
        probe = Probe(circuit=self.deployment, sender=ORCHESTRATOR, run=run)
        if self.recorder is not None:
            why = ENDED_EARLY if pending.ended_early else f"no result after {timeout:g} s"
            self.recorder.timeout(run, f"{why}; probing the gates")
        await self.publish(self._traced(run, [(topic(self.deployment, "control"), probe)]))
        try:
            await asyncio.sleep(self.probe_window)
            with contextlib.suppress(TimeoutError):  # the gates that have not answered: a while longer
                async with asyncio.timeout(min(PROBE_WAIT_MAX, PROBE_WAIT_PER_GATE * len(self.circuit.gates))):
                    await pending.answered.wait()
        except asyncio.CancelledError:  # cancelled while probing (a Restart): the gates may still forget it
            self._interrupted(run)
            await self._release(run, lost_is_fine=True)
            raise
        await self._release(run)
        arrived = pending.value.done() and not pending.value.cancelled() and pending.value.exception() is None
        stuck, shown = standing(self.circuit, pending.statuses, pending.waiting_for, value_arrived=arrived)
        came = Arrived(
            value=pending.value.result() if arrived else None,
            grads={name: pending.grads[name] for name in self.circuit.inputs if name in pending.grads},
        )
        told = came.told(list(self.circuit.inputs))
        message = f"run {run} did not finish within {timeout:g} s; not finished: {shown}"
        message += f"; arrived: {told}" if told else ""
        if faulty := sorted(f"{host} ({faults})" for host, faults in self.host_faults.items() if _loses(faults)):
            message += (  # a gate said not to answer may have answered: its host's injector dropped the answer
                f"; the fault injector of host(s) {', '.join(faulty)} may have dropped or delayed what is missing, "
                "answers to the probe too (the run's sentences say which)"
            )
        return RunTimeout(message, run, stuck, came)

    # -- incoming messages ----------------------------------------------------------------

    async def stay_connected(self, started: asyncio.Future[None] | None = None) -> NoReturn:
        """Hold a connection to the broker, reconnecting and resubscribing whenever it is lost,
        and the recorder's tap if it has one (subscribed first: it hears every message of a run).

        `started` resolves once connected and subscribed. Runs in flight when the connection
        breaks fail with RunConnectionLost (they may be retried); a first connection that cannot
        be made is a BrokerError (in an exception group if it is the tap's: `connected` unwraps it).
        """
        if self.tap is None and self.record_watch is None:
            await self._stay_connected(started)
        async with asyncio.TaskGroup() as group:
            if self.record_watch is not None:
                group.create_task(self._watch_record(self.record_watch))
            if self.tap is not None:
                tapped = asyncio.get_running_loop().create_future()
                group.create_task(self._hold_tap(tapped))
                await tapped
            await self._stay_connected(started)

    async def _hold_tap(self, started: asyncio.Future[None]) -> NoReturn:
        assert self.tap is not None
        try:
            await self.tap.hold(started)
        except TransportError as exc:  # only the first connection is not retried
            raise broker_failed(self.broker, exc, "cannot record the run's trace") from exc

    async def _stay_connected(self, started: asyncio.Future[None] | None) -> NoReturn:
        try:
            await stay_connected(
                lambda: Session.open(self.broker, self.on_message),
                up=self._up,
                down=self._down,
                started=started,
                retry_first=False,
                name=f"the broker at {self.broker}",
            )
        except TransportError as exc:  # only the first connection is not retried
            raise broker_failed(self.broker, exc) from exc

    async def _up(self, session: Session) -> None:
        await session.subscribe(self.subscriptions())
        self._session = session
        self.connected.set()
        if self.record_watch is not None:  # deleted before this connection: no message says so
            self._doubt.set()

    def _down(self, session: Session | None, error: TransportError | None) -> None:
        self.connected.clear()
        self._session = None
        if error is not None:
            for run, pending in self._pending.items():
                pending.fail(RunConnectionLost(f"run {run}: lost the broker at {self.broker}: {error}", run))

    async def publish(
        self, batch: Sequence[tuple[str, BaseModel | None]], *, retain: bool = False, confirm: bool = False
    ) -> None:
        """Send at QoS 1 on the current connection; with `confirm`, wait for the broker's PUBACKs.

        transport_errors.ConnectionLost if there is no connection: a run that cannot send cannot finish.
        """
        session = self._session
        if session is None or not self.connected.is_set():
            message = f"not connected to the broker at {self.broker}"
            raise transport_errors.ConnectionLost(message, broker=str(self.broker))
        try:
            await session.publish_all([(name, encode(message)) for name, message in batch], retain, confirm=confirm)
        except TimeoutError as exc:
            message = f"the broker at {self.broker} {exc}"
            raise transport_errors.ConnectionLost(message, broker=str(self.broker)) from None

    def on_message(self, name: str, raw: bytes) -> None:
        """Route every incoming message to the run (or the readiness check) it belongs to."""
        if name == self._record_topic:
            self._on_record(raw)
            return
        if not raw:
            return
        try:
            if name.startswith(HOSTS_PREFIX):
                self._on_presence(HostPresence.model_validate_json(raw))
                return
            parsed = parse_topic(name)
            recorder = self.recorder if self.tap is None else None  # with a tap, the tap hears everything
            if parsed is None or parsed[1] in ("spec", "trace"):
                if parsed is not None and parsed[1] == "trace" and recorder is not None:
                    recorder.on_trace(raw)
                return
            if self.tally is not None and parsed[1] in TALLIED:
                self._count(parsed[1], raw)
            if self.observer is None and not self._reads(parsed[1], parsed[2]):
                if recorder is not None:
                    recorder.on_crossing(name, raw)  # decoded when the trace is read
                return  # what no run waits for is not even decoded (subscribed wide for a tally)
            decoded = MESSAGE_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            log.warning("ignored a malformed message on %s: %s", name, exc.errors()[0]["msg"])
            return
        if self.observer is not None and getattr(decoded, "run", None) in self._pending:
            self.observer(name, decoded)
        if self.recorder is not None:
            self.recorder.on_message(name, decoded, raw, crossed=self.tap is None)
        self._dispatch(decoded)

    def _count(self, kind: TopicKind, raw: bytes) -> None:
        assert self.tally is not None
        for run in list(self._pending) or [self._last_run]:  # a run cancelled before is not this one's
            if run and run.encode() in raw:
                self.tally(run, kind)
                return

    def _reads(self, kind: str, gate: str | None) -> bool:
        """A message on this topic may matter to a run, not only to its trace (see _dispatch)."""
        return kind in ("report", "error", "status", "ready") or (kind == "fwd" and gate == self.circuit.output)

    def _dispatch(self, message: object) -> None:
        match message:
            case Ready(sender=gate):
                self._not_ready.discard(gate)
                if not self._not_ready:
                    self._not_ready = set()  # drop the table it had grown to for every gate
                if self._awaited is not None:
                    self._awaited.discard(gate)
                    if not self._awaited:
                        self._ready_changed.set()
            case Forward(run=run, value=value) if run in self._pending and message.sender == self.circuit.output:
                if not self._pending[run].value.done():
                    self._pending[run].value.set_result(value)
            case GradReport(run=run, sender=leaf, grad=grad) if run in self._pending:
                pending = self._pending[run]
                pending.grads[leaf] = grad
                pending.waiting_for.discard(leaf)
                if not pending.waiting_for and not pending.done.done():
                    pending.done.set_result(None)
            case Status(run=run) if run in self._pending:
                statuses = self._pending[run].statuses
                statuses[message.sender] = message
                if len(statuses) == len(self.circuit.gates):
                    self._pending[run].answered.set()
            case ErrorReport(run=run) if run in self._pending and message.code in RUN_FAILING_CODES:
                self._pending[run].fail(
                    GateFailed(
                        f"run {run}: gate {message.sender} failed: {message.message}", run, message.sender, message.code
                    )
                )
            case ErrorReport(run=run) if run is None or run in self._pending:
                log.warning("gate %s reported %s: %s", message.sender, message.code, message.message)


REDEPLOY = "; redeploy with `gatemesh deploy` onto live hosts"
"""What a lost host's error advises at a terminal (the web page has its own way back)."""


@contextlib.asynccontextmanager
async def open_runner(
    circuit: Circuit,
    deployment: str,
    broker: BrokerAddress,
    *,
    hosts: Mapping[str, str] | None = None,
    placement: Mapping[str, str] | None = None,
    recorder: Recorder | None = None,
    record_watch: RecordWatch | None = None,
) -> AsyncIterator[Runner]:
    """Connect a Runner to a deployment; its subscriptions are acknowledged before it is yielded."""
    runner = Runner(
        circuit,
        deployment,
        broker,
        hosts=hosts,
        placement=placement,
        recorder=recorder,
        record_watch=record_watch,
    )
    async with connected(runner):
        yield runner


@contextlib.asynccontextmanager
async def connected(runner: AnyRunner) -> AsyncIterator[AnyRunner]:
    """Hold `runner`'s connection for the block (any Runner: a Watcher too); subscribed when it is yielded."""
    try:
        async with asyncio.TaskGroup() as group:
            started = asyncio.get_running_loop().create_future()
            connection = group.create_task(runner.stay_connected(started))
            try:
                await started  # if the connection fails first, the group cancels this wait and raises its error
                yield runner
            finally:
                await cancel_and_wait([connection])
    except BaseExceptionGroup as failed:
        cause = unwrap(failed)
        if cause is failed:
            raise
        raise cause from failed


def _loses(faults: str) -> bool:
    """Whether a host's faults (as it announces them) can make a message miss a timeout: drops or
    delays (a duplicate or a reorder cannot); faults it cannot read may."""
    plan = Faults.announced(faults)
    return plan is None or plan.drop > 0 or plan.delay_ms[1] > 0
