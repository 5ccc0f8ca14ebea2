"""Recording a trace: the orchestrator's own events, the broker crossings it sees, the gates' batches.

A Runner given a Recorder traces every run it makes. For each run the recorder keeps the
orchestrator's Clock, stamps the orchestrator's messages (feeds, the seed, probe, release),
and records, in the order it learns of them:

- its own events: `send`, `receive` (of the output's value, the reports, status answers,
  errors), `timeout`, `host_lost`;
- a `cross` event (node `broker`) for every message of the run that passes the broker, with
  the message's own stamp: the crossing is where the message is, not an event of any node.
  A Runner hears them, and the gates' batches, on a tap of the recorder's own
  (orchestrator/tap.py), kept as the bytes read until the trace is read;
- every event the gates publish on gatemesh/C/trace/G (gates/tracing.py), each with the
  message's destinations filled in from the circuit (a gate does not know who reads it).

Listeners (the --explain narrator, a live view) hear each event as it is recorded. `trace()`
returns it all in an order that respects happens-before (orchestrator/trace.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gates.clocks import Clock, Stamp, named
from gates.faults import Faults
from gates.protocol import (
    BROKER,
    MESSAGE_ADAPTER,
    ORCHESTRATOR,
    ErrorReport,
    Forward,
    GradReport,
    Message,
    Status,
    parse_topic,
)
from gates.trace_records import (
    CLOCK_KEY,
    STEP_MODE_COPY_DROP,
    STEP_MODE_DROP,
    STEP_MODE_DUPLICATE,
    UNSEEN,
    EventType,
    TraceBatch,
    TraceEvent,
    TraceMsg,
    at_topic,
    describe,
    message_id,
    msg_fields,
    parse_trace_topic,
    trace_event,
)
from gates.tracing import with_clock
from orchestrator.circuit import Circuit
from orchestrator.explain import Explainer, numbered
from orchestrator.result import RunResult
from orchestrator.tap import Tapped, TapStream
from orchestrator.trace import RunRecord, Trace, TraceHeader, causal_order, write_trace

log = logging.getLogger(__name__)

Listener = Callable[[TraceEvent], None]


_Crossing = tuple[int, str, bytes]
"""A message seen passing the broker, (t_ns, topic, payload as it came): a `cross` event if it
belongs to a traced run, decided when the trace is read. A tap's read (Tapped) is a pair: plain
tuples both, told apart by their length (a named tuple would be one more object for the
garbage collector to visit, per message)."""
_Local = dict[str, Any]
"""One of the orchestrator's own events: a TraceEvent's fields, its `vc` still by node number,
validated when the trace is read.

Both are plain data (strings, numbers, bytes, dicts of them): nothing the garbage collector has
to visit while the trace waits to be read, which a pass would pay for (bench/tracing.py)."""


_RECEIVED = (Forward, GradReport, Status, ErrorReport)
"""What the orchestrator receives (rather than only sees crossing) when it reads the topic."""
DRAIN_TIMEOUT = 2.0
"""Seconds `drain` waits for the gates' last events (receipts of late copies, of a release)."""


class _Tally:
    """What the events counted so far promise and hold, by message (for `Recorder.missing`)."""

    def __init__(self) -> None:
        self.counted = 0
        self.copies: Counter[tuple[str, str]] = Counter()
        self.crossed: Counter[tuple[str, str]] = Counter()
        self.received: Counter[tuple[str, str, str]] = Counter()
        self.dests: dict[tuple[str, str], tuple[str, ...]] = {}
        self.heard: dict[tuple[str, str], str] = {}
        """Messages crossed or received, by (run, id): their sender, whose send must be recorded too."""
        self.students: Counter[tuple[str, str]] = Counter()
        """Copies a student's duplicates made (less those they dropped): owed only while the run goes
        on, since the stepper lets go of what still waits once it is over."""

    def count(self, e: TraceEvent) -> None:
        if e.msg is None:
            return
        key = (e.run, e.msg.id)
        if e.type in ("cross", "receive") and e.msg.id:
            self.heard[key] = e.msg.src
        match e.type:
            case "send":
                self.copies[key] += 1
                self.dests[key] = e.msg.dest
            case "drop":
                self.copies[key] -= 1
                if e.note == STEP_MODE_COPY_DROP:
                    self.students[key] -= 1
            case "duplicate":
                self.copies[key] += 1
                if e.note == STEP_MODE_DUPLICATE:
                    self.students[key] += 1
            case "cross":
                self.crossed[key] += 1
                self.dests.setdefault(key, e.msg.dest)
            case "receive":
                self.received[(*key, e.node)] += 1

    def unreceived(self, key: tuple[str, str], copies: int, gone: set[str]) -> int:
        """Receipts of `copies` copies of message `key` that its destinations (but those in `gone`) owe."""
        return sum(max(0, copies - self.received[(*key, node)]) for node in self.dests.get(key, ()) if node not in gone)


class Recorder:
    """Records the traced runs of one Runner (attach it with `open_runner(..., recorder=...)`)."""

    def __init__(
        self, *, faults: Faults | None = None, faults_text: str = "", host: str = ORCHESTRATOR, taps: bool = True
    ) -> None:
        self.taps = taps
        """A Runner opened with this recorder hears crossings and batches on a Tap of their own
        (orchestrator/tap.py). False: on its own connection, subscribed to everything (a
        runner that other recorders, observers and tallies are swapped into: the web page)."""
        self.faults = faults
        self.faults_text = faults_text
        self.host_faults: dict[str, str] = {}
        """What each gate host says its fault injector does (HostPresence.faults): the header's
        `faults` when this orchestrator injects none itself."""
        self.host = host
        self.unseen_note = UNSEEN
        """What a gate's event says of a message whose crossing is not read (yet)."""
        self.circuit: Circuit | None = None
        self.deployment = ""
        self.placement: dict[str, str] = {}
        self.nodes: tuple[str, ...] = (ORCHESTRATOR,)
        """Every node by its number in the vector clocks (Circuit.nodes)."""
        self._log: list[_Local | _Crossing | Tapped | bytes] = []
        self._stream = TapStream()
        self._events: list[TraceEvent] = []
        self._lines = 0
        """Events numbered so far as --explain numbers its sentences (TraceEvent.line)."""
        self._read = 0
        """Entries of _log already read into _events."""
        self.listeners: list[Listener] = []
        self.lost_hosts: set[str] = set()
        self._clocks: dict[str, Clock] = {}
        self._runs: dict[str, RunRecord] = {}
        self._received: set[tuple[str, str]] = set()
        self._ended: set[str] = set()
        self._dests: dict[str, tuple[str, ...]] = {}
        self._crossed: dict[str, dict[str, TraceMsg]] = {}
        """By run, the messages read so far (crossings, the orchestrator's sends, faults) by id:
        what a gate's send or receive names (TraceBatch.trace_events)."""
        self._unseen: dict[tuple[str, str], list[TraceEvent]] = {}
        """By (run, id), the gates' events that name a message before its crossing was read (a
        held message waits for the stepper): given the message when it crosses."""
        self._changed = asyncio.Event()
        self._draining = False
        """`drain` waits: wake it at each entry."""
        self._tally = _Tally()

    # -- set-up, by the Runner ------------------------------------------------------------

    def attach(self, circuit: Circuit, deployment: str, placement: Mapping[str, str]) -> None:
        self.circuit = circuit
        self.deployment = deployment
        self.placement = {g.id: placement.get(g.id, "local") for g in circuit.gates}
        self.nodes = circuit.nodes

    def dest(self, topic_name: str) -> tuple[str, ...]:
        """Every node a message on `topic_name` is delivered to."""
        found = self._dests.get(topic_name)
        if found is None:
            found = self._dests[topic_name] = self._dest(topic_name)
        return found

    def _dest(self, topic_name: str) -> tuple[str, ...]:
        parsed = parse_topic(topic_name)
        if parsed is None or self.circuit is None:
            return ()
        _, kind, gate = parsed
        if kind == "control":
            return tuple(g.id for g in self.circuit.gates)
        if kind == "fwd" and gate is not None:
            return self.circuit.readers.get(gate, ())
        if kind in ("feed", "grad") and gate is not None:
            return (gate,)
        return (ORCHESTRATOR,)

    # -- the orchestrator's own events ----------------------------------------------------

    def begin(self, run: str, inputs: Mapping[str, float]) -> None:
        self._clocks[run] = Clock(ORCHESTRATOR, 0)
        self._runs[run] = RunRecord(run=run, inputs=dict(inputs))

    def end(self, run: str, result: RunResult | None = None, error: BaseException | None = None) -> None:
        self._ended.add(run)
        if run in self._runs:
            update = {"result": result, "error": str(error) if error is not None else ""}
            self._runs[run] = self._runs[run].model_copy(update=update)

    def stamp(self, run: str, batch: Sequence[tuple[str, BaseModel]]) -> list[tuple[str, BaseModel]]:
        """The orchestrator's messages for a traced run, each stamped and recorded as a send."""
        clock = self._clocks.get(run)
        if clock is None:
            return list(batch)
        stamped: list[tuple[str, BaseModel]] = []
        for name, message in batch:
            stamp = clock.send()
            sent = with_clock(message, stamp)
            stamped.append((name, sent))
            self._local("send", run, stamp, msg=msg_fields(name, sent, self.dest(name)))
        return stamped

    def timeout(self, run: str, why: str) -> None:
        """Run `run`'s wait ended (`why`: after how long, or why sooner) and the gates are probed."""
        clock = self._clocks.get(run)
        if clock is not None:
            self._local("timeout", run, clock.tick(), note=why)

    def host_lost(self, host: str, reason: str, runs: Sequence[str]) -> None:
        """Host `host` is gone: a `host_lost` event in every traced run still in flight."""
        self.lost_hosts.add(host)
        gates = tuple(g for g, h in self.placement.items() if h == host)
        for run in runs:
            clock = self._clocks.get(run)
            if clock is not None:
                self._local("host_lost", run, clock.tick(), gates=gates, note=f"host {host} {reason}")

    def dropped(self, run: str, topic_name: str, message: Message, *, copy: bool = False) -> None:
        """A student dropped `message` (`copy`: the second copy a duplicate left) in step mode
        (web/stepper.py): the gates never hear of it, so the orchestrator records the drop, as
        an injector's drop is recorded at its gate."""
        self._by_student("drop", run, topic_name, message, STEP_MODE_COPY_DROP if copy else STEP_MODE_DROP)

    def duplicated(self, run: str, topic_name: str, message: Message) -> None:
        """A student duplicated `message` in step mode: one copy went, a second waits at the
        stepper. Recorded as `dropped` is: the trace then owes the second copy's crossing and
        receipts, and the Lamport diagram draws it waiting."""
        self._by_student("duplicate", run, topic_name, message, STEP_MODE_DUPLICATE)

    def _by_student(self, kind: EventType, run: str, topic_name: str, message: Message, note: str) -> None:
        clock = self._clocks.get(run)
        fields = msg_fields(topic_name, message, self.dest(topic_name))
        if clock is not None and fields is not None:
            self._local(kind, run, clock.tick(), msg=fields, note=note)

    def _local(self, kind: EventType, run: str, stamp: Stamp, **fields: object) -> None:
        event: _Local = {"t_ns": time.time_ns(), "type": kind, "run": run, "node": ORCHESTRATOR, "host": self.host}
        event.update(lamport=stamp.lamport, vc=stamp.vc, **fields)
        self._record(event)

    # -- what arrives ---------------------------------------------------------------------

    def on_message(self, topic_name: str, message: Message, payload: bytes, *, crossed: bool = True) -> None:
        """The orchestrator read a message (`payload`, decoded as `message`): its crossing (unless
        `crossed` is False: a tap hears it) and its receipt, if it is one of a traced run's."""
        run = getattr(message, "run", None)
        clock = self._clocks.get(run) if isinstance(run, str) else None
        if clock is None or message.clock is None or not self.clock_fits(topic_name, message.clock):
            return
        assert isinstance(run, str)
        if crossed:
            self._record((time.time_ns(), topic_name, payload))
        dest = self.dest(topic_name)
        if isinstance(message, _RECEIVED) and ORCHESTRATOR in dest:
            key = (run, message_id(message.sender, message.clock))
            note = "duplicate" if key in self._received else ""
            self._received.add(key)
            msg = msg_fields(topic_name, message, dest)
            self._local("receive", run, clock.receive(message.clock), msg=msg, note=note)

    def clock_fits(self, topic_name: str, stamp: Stamp) -> bool:
        """Whether a message's clock names only nodes this deployment has: a forged one naming a
        million would be merged into the orchestrator's clock, and copied into every later event."""
        if len(stamp.vc) <= len(self.nodes):
            return True
        log.warning(
            "ignored a message on %s: a vector clock of %d entries, for %d nodes",
            topic_name,
            len(stamp.vc),
            len(self.nodes),
        )
        return False

    def on_crossing(self, topic_name: str, payload: bytes) -> None:
        """A message passed the broker that only the trace needs: kept as it came, decoded (and
        dropped unless it belongs to a traced run) when someone looks at the trace."""
        if CLOCK_KEY in payload:
            self._record((time.time_ns(), topic_name, payload))

    def on_trace(self, payload: bytes) -> None:
        """A gate's TraceBatch: kept as it came, and read (validated) when someone looks at the trace."""
        self._record(payload)

    def on_tapped(self, tapped: Tapped) -> None:
        """Bytes the tap read: framed into crossings and batches when someone looks at the trace."""
        self._record(tapped)

    def on_tapped_message(self, topic_name: str, payload: bytes) -> None:
        """A message the tap's session read before it began capturing (with its SUBACK)."""
        if parse_trace_topic(topic_name) is not None:
            self.on_trace(payload)
        else:
            self.on_crossing(topic_name, payload)

    def _record(self, entry: _Local | _Crossing | Tapped | bytes) -> None:
        """Keep an event, a crossing or a gate's batch, in the order the recorder learned of it.

        Everything is made into events only when someone looks (`events`): every message of a
        traced run crosses, every gate sends a batch, and a pass must stay cheap
        (bench/tracing.py). With listeners (--explain, a live view), at once.
        """
        self._log.append(entry)
        if self._draining:
            self._changed.set()
        if self.listeners:
            known = len(self._events)
            for event in self.events[known:]:
                for listener in self.listeners:
                    listener(event)

    @property
    def events(self) -> list[TraceEvent]:
        """Every event recorded so far, in the order the recorder learned of them."""
        for entry in self._log[self._read :]:
            for event in self._read_entry(entry):
                if numbered(event):  # as --explain numbers its sentences, in this same order
                    self._lines += 1
                    event.line = self._lines
                self._events.append(event)
        self._read = len(self._log)
        return self._events

    def _read_entry(self, entry: _Local | _Crossing | Tapped | bytes) -> list[TraceEvent]:
        if isinstance(entry, bytes):
            return self._read_batch(entry)
        if isinstance(entry, dict):
            try:
                vc = named(entry["vc"], self.nodes)
            except ValueError as exc:  # a message's clock that names nodes this deployment lacks
                log.warning("ignored an event of the orchestrator: %s", exc)
                return []
            event = trace_event(entry, vc)
            self._known(event.run, event.msg)
            return [event]
        if len(entry) == 3:
            return self._read_crossing(*entry)
        events = []
        for t_ns, topic_name, payload in self._stream.read(entry):
            if parse_trace_topic(topic_name) is not None:
                events += self._read_batch(payload)
            elif CLOCK_KEY in payload:
                events += self._read_crossing(t_ns, topic_name, payload)
        return events

    def _read_crossing(self, t_ns: int, topic_name: str, payload: bytes) -> list[TraceEvent]:
        try:
            message = MESSAGE_ADAPTER.validate_json(payload)
        except ValidationError as exc:
            log.warning("ignored a malformed message on %s: %s", topic_name, exc.errors()[0]["msg"])
            return []
        run = getattr(message, "run", None)
        if run not in self._clocks or message.clock is None:
            return []
        try:
            vc = named(message.clock.vc, self.nodes)
        except ValueError as exc:
            log.warning("ignored a message on %s: %s", topic_name, exc)
            return []
        msg = describe(topic_name, message, self.dest(topic_name))
        self._known(run, msg)
        fields = {"t_ns": t_ns, "type": "cross", "run": run, "node": BROKER, "host": BROKER}
        return [trace_event({**fields, "lamport": message.clock.lamport, "msg": msg}, vc)]

    def _read_batch(self, payload: bytes) -> list[TraceEvent]:
        """A gate's events, validated, each message's destinations filled in from the circuit."""
        try:
            batch = TraceBatch.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("ignored a malformed trace batch: %s", exc.errors()[0]["msg"])
            return []
        if batch.run not in self._clocks or batch.circuit != self.deployment:
            return []
        for *_, msg, _ in batch.events:
            if isinstance(msg, TraceMsg):  # a fault's: a dropped message never crosses
                msg.dest = self.dest(msg.topic)
                self._known(batch.run, msg)
        known = self._crossed.get(batch.run, {})
        try:
            events = batch.trace_events(self.nodes, known, self.unseen_note)
        except ValueError as exc:
            log.warning("ignored a trace batch of %s: %s", batch.sender, exc)
            return []
        for event in events:
            if event.msg is not None and not event.msg.dest:
                event.msg.dest = self.dest(event.msg.topic)
            if event.msg is not None and event.msg.id not in known:
                self._unseen.setdefault((batch.run, event.msg.id), []).append(event)
        return events

    def _known(self, run: str, msg: TraceMsg | None) -> None:
        """Keep a message's TraceMsg for the gates' events that name it (the first copy read),
        and give it to those that named it before."""
        if msg is None or not msg.id:
            return
        known = self._crossed.setdefault(run, {})
        if msg.id not in known:
            known[msg.id] = msg
            for event in self._unseen.pop((run, msg.id), ()):
                assert event.msg is not None
                event.msg = at_topic(msg, event.msg.topic)

    def clear(self) -> None:
        """Forget every event recorded so far, and every run that has ended (a long-lived traced
        runner keeps memory flat); late events of a forgotten run are dropped."""
        for entry in self._log[self._read :]:
            if isinstance(entry, tuple) and len(entry) == 2:  # the tap's bytes
                for _ in self._stream.read(entry):  # framed, not decoded: the next read continues the stream
                    pass
        self._log.clear()
        self._events = []
        self._lines = 0
        self._read = 0
        self._tally = _Tally()
        for run in self._ended:
            self._clocks.pop(run, None)
            self._runs.pop(run, None)
        self._ended.clear()
        self._received = {key for key in self._received if key[0] in self._clocks}
        self._crossed = {run: known for run, known in self._crossed.items() if run in self._clocks}
        self._unseen.clear()

    # -- completeness ---------------------------------------------------------------------

    def missing(self) -> int:
        """Receipts and crossings the sends recorded so far promise and the trace does not have
        yet, and sends that the crossings and receipts recorded so far promise.

        A send promises one copy (two after a `duplicate`, none after a `drop`) to each of its
        destinations, and one crossing per copy; gates on a lost host promise nothing, nor, once
        its run is over, a second copy a student left waiting in step mode. A message crossed or
        received was sent: a gate sends its events after the step's messages, so its batch may
        come after them.
        """
        tally = self._counted()
        gone = self._gone()
        short = sum(1 for key, src in tally.heard.items() if key not in tally.copies and src not in gone)
        for key, n in tally.copies.items():
            if key[0] in self._ended:  # the stepper let go of what still waited
                n -= min(tally.students[key], max(0, n - tally.crossed[key]))
            short += max(0, n - tally.crossed[key]) + tally.unreceived(key, n, gone)
        return short

    def in_flight(self, run: str) -> int:
        """Receipts still to come of `run`'s messages that crossed the broker: a gate on a live host
        that has not yet recorded one may still be handling it, and what it sends is still to come
        (a stepped run is quiet only when nothing is left to deliver and this is 0)."""
        tally, gone = self._counted(), self._gone()
        return sum(tally.unreceived(key, n, gone) for key, n in tally.crossed.items() if key[0] == run)

    def _counted(self) -> _Tally:
        tally = self._tally
        for e in self.events[tally.counted :]:
            tally.count(e)
        tally.counted = len(self._events)
        return tally

    def _gone(self) -> set[str]:
        """The gates of the hosts lost: they receive nothing more."""
        return {g for g, h in self.placement.items() if h in self.lost_hosts}

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> int:
        """Wait until the trace is complete (see `missing`) or `timeout` passes; the number still missing.

        Between two counts it waits four times as long as the last count took: a big circuit's
        last batches arrive by the hundred, and counting after each would cost more than reading them.
        """
        self._draining = True
        try:
            async with asyncio.timeout(timeout):
                while True:
                    start = time.perf_counter()
                    if (short := self.missing()) == 0:
                        break
                    self._changed.clear()
                    await self._changed.wait()
                    await asyncio.sleep(min(0.05, 4 * (time.perf_counter() - start)))
        except TimeoutError:
            short = self.missing()
            log.info("trace: %d receipt(s) or crossing(s) never arrived", short)
        finally:
            self._draining = False
        return short

    # -- the result -----------------------------------------------------------------------

    def trace(self) -> Trace:
        assert self.circuit is not None, "the recorder was never attached to a runner"
        runs = tuple(self._runs.values())
        last = runs[-1] if runs else None
        header = TraceHeader(
            circuit=self.circuit,
            deployment=self.deployment,
            run=last.run if last else None,
            inputs=last.inputs if last else {},
            seed=self.faults.seed if self.faults is not None else None,
            faults=self.faults_text or "; ".join(f"{h}: {f}" for h, f in sorted(self.host_faults.items()) if f),
            placement=self.placement,
            runs=runs,
        )
        return Trace(header=header, events=tuple(causal_order(self.events)))

    def write(self, path: Path) -> Trace:
        trace = self.trace()
        write_trace(trace, path)
        return trace


def explain_to(
    recorder: Recorder, say: Callable[[str], None], duplicated_by: str = "the fault injector"
) -> Callable[[], str]:
    """--explain from the trace: one sentence per crossing, per fault (a drop, a delay, a
    reorder), per host lost and per timeout, as the recorder records them (a gate's faults are
    told when its events arrive, after the messages of their step).

    The sentences, the trace file and the pictures are then made from the same events. Returns
    what to say under them: what a message id is, once one was shown (Explainer.id_note).
    """
    explainer: Explainer | None = None
    runs: list[str] = []
    """The runs told, in the order their first sentence came (--retries makes several)."""
    told = ""
    """The run the last sentence was of: a sentence of another run comes under a line naming it."""

    def listen(event: TraceEvent) -> None:
        nonlocal explainer, told
        if not numbered(event) or recorder.circuit is None:
            return
        if explainer is None:
            hosts = set(recorder.placement.values())
            placement = None if hosts <= {"local"} else recorder.placement
            explainer = Explainer(recorder.circuit, placement, duplicated_by)
        if event.run and event.run != told:
            if event.run not in runs:
                runs.append(event.run)
                if len(runs) > 1:  # a retry: its sentences go on numbering, as lines name earlier lines
                    say(f"     run {len(runs)} ({event.run}): the same inputs again, under a fresh run id")
            elif event.run == runs[-1]:
                say(f"     run {len(runs)} ({event.run}) goes on:")
            else:  # an earlier run's late news (a gate's faults, told when its events came)
                say(f"     run {runs.index(event.run) + 1} ({event.run}), told late:")
            told = event.run
        if event.type == "cross" and event.msg is not None:
            say(explainer.tell(event.run, event.msg))
            return
        # only a gate in this process shares this clock: a gate host's is another machine's
        here = event.node != ORCHESTRATOR and event.host == "local"
        late = (time.time_ns() - event.t_ns) / 1e9 if here else None
        if event.type == "drop" and event.msg is not None:
            say(explainer.dropped(event.msg, event.run, late, by_student=event.note == STEP_MODE_DROP))
        elif event.type in ("delay", "reorder", "host_lost", "timeout"):
            say(explainer.fault(event, late))

    recorder.listeners.append(listen)
    return lambda: explainer.id_note() if explainer is not None else ""
