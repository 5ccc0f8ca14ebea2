"""What the page drives: one run at a time, its trace, its pictures, its held messages.

The shared Session lives as long as `gatemesh serve`; a room's (web/rooms.py) as long as
pages use it. Every page connected to one sees the same run (a teacher projects it, a student
clicks). Requests come from web/app.py already validated
(web/commands.py); what the page shows is pushed as parts (`run`, `progress`, `log`,
`pictures`, `step`, `cluster`), each with a version, so a client sends only what changed, and
at most a few times a second however many messages cross the broker.

A run of up to TRACE_LIMIT gates is traced (orchestrator/recorder.py): the sentences are
`--explain`'s, made from the crossings; the pictures are viz/'s, drawn from a snapshot of the
trace off the event loop. A larger run is counted by phase and told as sentences; past
EXPLAIN_LIMIT gates (a 65,000-gate deployment sends ~190,000 messages a pass) it is only
counted, from the messages' bytes (Runner.tally), and the page shows its summary and progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, NoReturn

from broker.security import SecureDir
from gates.errors import TransportError
from gates.lifecycle import cancel_and_wait
from gates.protocol import MESSAGE_ADAPTER, Message
from gates.trace_records import TraceEvent
from gates.transport import BrokerAddress
from orchestrator.circuit import Circuit
from orchestrator.cluster import read_record
from orchestrator.errors import BrokerError, CompileError, GatemeshError, HostLost, RunTimeout
from orchestrator.examples import EXAMPLES
from orchestrator.explain import Explainer
from orchestrator.recorder import explain_to
from orchestrator.records import DeploymentHead
from orchestrator.reference import listed, missing_inputs
from orchestrator.runner import REDEPLOY, Observer
from viz.caption import formula
from web import render
from web.commands import (
    MAX_RUN_TIMEOUT,
    PUBLISHING,
    Act,
    Compile,
    DeliverAll,
    HostAction,
    Refresh,
    Request,
    Restart,
    Run,
    Travel,
    Watch,
)
from web.hosts import ClusterWatch, HostProcesses, broker_url_for
from web.recording import WebRecorder
from web.stepper import PHASES, Choice, Held, Stepper
from web.targets import Place, Target, Targets
from web.view import Client, RunView, compile_alone, compiled, stuck_message
from web.watching import DeploymentWatch, Stage

log = logging.getLogger(__name__)

RENDER_INTERVAL = 0.25
"""Seconds between two drawings of the pictures, at least (longer when a drawing takes long)."""
QUIET = 0.8
"""Seconds a stepped run may have nothing to deliver before the gates are asked who waits."""
STEP_TIMEOUT = 3600.0
RUN_TIMEOUT = 10.0
RUN_TIMEOUT_PER_GATE = 0.05
"""A pass's default timeout grows with its circuit: on a busy 2-core machine a 1,200-gate pass
took 27 s, and the page's runs go up to a deployment's 65,000 gates."""
MAX_DEPLOY = 10_000
"""Gates the page may deploy itself (a live deployment may be any size)."""
TRACE_LIMIT = 200
"""Gates up to which a run is traced: its vector clocks have an entry per gate of the deployment."""
READ_ONLY = (
    "this server only watches (gatemesh serve --watch-only): it holds the read-only watcher account, so it "
    "cannot run, deploy, step, drop, duplicate or kill anything; choose a live deployment and press Watch "
    "to see the runs others make on it"
)
UNTRACED = "this run carries no clocks (gatemesh run --trace FILE or --explain adds them), so no diagram"
EXPLAIN_LIMIT = 1000
"""Gates up to which a run's messages are decoded and told as sentences; beyond, only counted."""
PARTS = ("run", "progress", "log", "pictures", "step", "cluster")


class Session:
    """A room's runs, pictures and step mode; `serve()` runs its background tasks.

    `watcher`: the address everything that only watches connects with (the cluster, a watched
    deployment): with --secure, the read-only account. `readonly`: the session has no other
    (--watch-only), so every request that would publish is refused. `room`: the name pages
    join it by ("": the shared room, the only one with gate hosts).
    """

    def __init__(
        self,
        broker: BrokerAddress,
        hosts: Sequence[str] = (),
        secure: SecureDir | None = None,
        *,
        watcher: BrokerAddress | None = None,
        readonly: bool = False,
        room: str = "",
    ) -> None:
        self.broker = broker
        self.room = room
        self.watch_broker = watcher or broker
        self.readonly = readonly
        self.view = RunView()
        self.versions = dict.fromkeys(PARTS, 1)
        self.clients: set[Client] = set()
        self.stepper = Stepper(broker, lambda: self.touch("step"), self._dropped, self._duplicated)
        self.cluster = ClusterWatch(self.watch_broker, lambda: self.touch("cluster"))
        accounts = (lambda name: broker_url_for(broker, secure, name)) if secure is not None else None
        self.hosts = HostProcesses(broker, list(hosts), lambda: self.touch("cluster"), accounts) if hosts else None
        self.targets = Targets(broker, self._spawn, secure)
        self.last: Run | None = None
        self._group: asyncio.TaskGroup | None = None
        self._replaced = ""
        """The run of the view the current one replaced."""
        self._ran_on: frozenset[str] = frozenset()
        """The gate hosts the last run ran on (none: not on this server's hosts)."""
        self._running: set[asyncio.Task[None]] = set()
        """Every run and watch not over yet: the newest, and any older one still stopping."""
        self._dirty = asyncio.Event()
        self.pictures: render.Pictures = render.NO_PICTURES
        """The shown run's pictures as last drawn, what every page has (a newer view's are blank
        until drawn: no page keeps the last run's)."""
        self._last_event = time.monotonic()
        """When the shown run's last event was recorded: a stepped run is quiet only after it."""
        self.ready = asyncio.Event()

    # -- life -----------------------------------------------------------------------------

    async def serve(self) -> NoReturn:
        async with asyncio.TaskGroup() as group:
            self._group = group
            if not self.readonly:  # the network actor delivers: it needs an account that may publish
                group.create_task(self.stepper.serve())
            group.create_task(self.cluster.serve())
            group.create_task(self._draw_loop())
            group.create_task(self._watch_loop())
            try:
                if self.hosts is not None:
                    self.hosts.online = self.cluster.wait_online
                    await self.hosts.start_all()
                if not self.readonly:
                    try:
                        async with asyncio.timeout(10):
                            await self.stepper.connected.wait()
                    except TimeoutError:
                        raise BrokerError(f"cannot reach the broker at {self.broker}: no connection in 10 s") from None
                self.ready.set()
                await asyncio.Event().wait()
            finally:
                await self.targets.close()
                if self.hosts is not None:
                    await self.hosts.stop_all()
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._group is not None, "the session is not serving"
        return self._group.create_task(work)

    # -- what the page sees ---------------------------------------------------------------

    def touch(self, part: str) -> None:
        self.versions[part] += 1
        if part == "pictures":
            return
        if part in ("run", "step", "progress"):
            self._dirty.set()
        for client in self.clients:
            client.wake.set()

    def connect(self) -> Client:
        client = Client()
        self.clients.add(client)
        client.reply({**self.choices(), "you": client.token})
        return client

    def changes(self, client: Client) -> list[dict[str, object]]:
        """The replies, then every part that changed since this client was last sent it."""
        out, client.replies = client.replies, []
        for part, version in self.versions.items():
            if client.sent.get(part) != version:
                client.sent[part] = version
                out.append({"type": part, **self.part(part)})
        return out

    def choices(self) -> dict[str, object]:
        examples = [
            {"index": i, "title": e.title, "source": e.source.strip(), "inputs": e.inputs, "lesson": e.lesson}
            for i, e in enumerate(EXAMPLES)
        ]
        hosts = self.hosts.names if self.hosts else []
        readonly = READ_ONLY if self.readonly else ""
        return {"type": "choices", "examples": examples, "hosts": hosts, "readonly": readonly, "room": self.room}

    def part(self, name: str) -> dict[str, object]:
        view = self.view
        match name:
            case "run":
                return {
                    "status": view.status,
                    "title": view.title,
                    "where": view.where,
                    "run": view.run,
                    "step": bool(view.request and view.request.step),
                    "request": view.request.model_dump() if view.request else None,
                    "by": view.by,
                    "inputs": view.inputs,
                    "result": view.result.model_dump() if view.result else None,
                    "arrived": view.arrived_view(),
                    "error": view.error,
                    "compile_error": view.compile_error,
                    "summary": view.summary,
                }
            case "progress":
                return {"progress": view.progress.view() if view.progress else None}
            case "log":
                return {"said": view.said, "sentences": list(view.sentences)}
            case "pictures":
                circuit_svg, circuit_note, lamport_svg, lamport_note = self.pictures
                return {
                    "circuit": circuit_svg,
                    "circuit_note": circuit_note,
                    "lamport": lamport_svg,
                    "lamport_note": lamport_note,
                }
            case "step":
                return self.stepper.view()
            case "cluster":
                ours = self.hosts.view() if self.hosts else []
                return {"ours": ours, **self.cluster.view()}
        raise KeyError(name)

    # -- requests -------------------------------------------------------------------------

    async def handle(self, request: Request, client: Client) -> None:
        """Do what the page asks; a GatemeshError, KeyError or ValueError is the page's message."""
        if self.readonly and isinstance(request, PUBLISHING):
            raise ValueError(READ_ONLY)
        match request:
            case Compile(source=source):
                client.reply(await compiled(source))
            case Run():
                self.start(request, by=client.token)
            case Restart():
                if self.last is None:
                    raise ValueError("nothing to restart: run something first")
                self.start(self.last, by=client.token)
            case Travel(index=index):
                if self.last is None or not self.last.step:
                    raise ValueError("time travel replays a stepped run: run one in step mode first")
                history = self.stepper.history
                if index > len(history):
                    raise ValueError(f"step {index}: the run has {len(history)} choices")
                self.start(self.last, replay=history[:index], by=client.token)
            case Act(type=action, id=message_id):
                self.stepper.act(action, message_id)
            case DeliverAll():
                self.stepper.deliver_all()
            case HostAction(type="kill_host", name=name):
                self._our_hosts(name).kill(name)
            case HostAction(type="start_host", name=name):
                await self._our_hosts(name).start(name)
            case Watch(deployment=name):
                self.watch(name)
            case Refresh():
                client.sent.clear()
                client.wake.set()

    def _live(self, name: str) -> DeploymentHead | None:
        """Deployment `name` as the broker holds it (None: not heard of yet); ValueError if it was
        made for one run (another page's on its hosts, a `gatemesh run --hosts`): not to run on."""
        head = self.cluster.deployments.get(name)
        if head is not None and head.transient:
            live = self._named()
            raise ValueError(f"deployment {name} was made for one run, not to run on; live deployments: {live}")
        return head

    def _named(self) -> str:
        """The live deployments' names, as an error lists them."""
        return ", ".join(sorted(n for n, head in self.cluster.deployments.items() if not head.transient)) or "none"

    def _our_hosts(self, name: str) -> HostProcesses:
        if self.hosts is None or name not in self.hosts.hosts:
            raise ValueError(f"host {name} was not started by this server (gatemesh serve --hosts N starts some)")
        return self.hosts

    def start(self, request: Run, replay: Sequence[Choice] = (), by: str = "") -> None:
        """Stop the run in progress (or the watch), if any, and start this one (`by`: the page that asked)."""
        self.last = request  # at once: a Restart while the previous run still stops restarts this one
        self._follow(self._spawn(self._run(request, list(replay), set(self._running), by)))

    def watch(self, name: str) -> None:
        """Stop the run in progress, if any, and show the runs others make on deployment `name`."""
        head = self._live(name)
        if head is None:
            raise ValueError(f"no deployment named {name} on the broker (deployments: {self._named()})")
        self._follow(self._spawn(self._watch(head, set(self._running))))

    def _follow(self, task: asyncio.Task[None]) -> None:
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _watch(self, head: DeploymentHead, previous: set[asyncio.Task[None]]) -> None:
        await _stopped(previous)
        self.stepper.close()
        self._show(RunView(status="connecting", title=f"deployment {head.name}"))  # not the last run's result
        try:
            record = await read_record(self.watch_broker, head)
            stage = Stage(self._show, self.touch, self._say, self._on_event, self._observer, TRACE_LIMIT)
            await DeploymentWatch(record, self.watch_broker, stage).serve()
        except TimeoutError:
            self.view.status, self.view.error = "failed", f"cannot watch deployment {head.name}: no answer in time"
        except (GatemeshError, TransportError, ValueError) as exc:
            self.view.status, self.view.error = "failed", f"cannot watch deployment {head.name}: {exc}"
        except Exception as exc:  # the page gets a sentence, the log the traceback; the session goes on
            log.exception("watching failed")
            self.view.status, self.view.error = "failed", f"the server could not watch that: {exc}"
        self.touch("run")

    def _show(self, view: RunView) -> None:
        self.view = view
        self.touch("run")
        self.touch("progress")
        self.touch("log")

    # -- one run --------------------------------------------------------------------------

    async def _run(self, request: Run, replay: list[Choice], previous: set[asyncio.Task[None]], by: str) -> None:
        await _stopped(previous)
        self._replaced = self.view.run or self._replaced  # its late messages may still cross: not this run's
        view = self.view = RunView(request=request, status="starting", by=by)
        self.stepper.arm(replay)
        self.touch("run")
        self.touch("progress")
        self.touch("log")
        try:
            place, inputs, view.title = await self._place(request)
            hosts = frozenset(place.hosts)
            if replay and self._ran_on and hosts and hosts != self._ran_on:  # a host killed or started since
                self._say(
                    f"time travel replays your choices on gate hosts {', '.join(place.hosts)}; the run you made "
                    f"them in ran on {', '.join(sorted(self._ran_on))}: the same messages, on other hosts"
                )
            view.inputs = dict(inputs)
            view.status = "deploying"
            self.touch("run")
            target = await self.targets.get(place)
            self._ran_on = hosts
            self.touch("cluster")  # its deployment is the page's own: not listed as a live one
            await self._run_on(view, target, request, inputs)
        except CompileError as exc:
            view.status = "failed"
            view.compile_error = {"line": exc.line, "column": exc.column, "message": str(exc)}
            view.error = f"the source does not compile: {exc}"
        except RunTimeout as exc:
            view.status = "failed"
            view.error = stuck_message(str(exc)) if view.stuck else str(exc)
            view.arrived = exc.arrived  # nothing, too: the box says what never arrived
        except HostLost as exc:
            view.status = "failed"
            view.error = str(exc)
            if request.deployment is None and request.where == "hosts":  # a host this server started
                view.error = view.error.removesuffix(REDEPLOY) + "; start it again under Gate hosts, then Restart"
        except (GatemeshError, ValueError, TransportError, TimeoutError) as exc:
            view.status = "failed"
            view.error = str(exc) or type(exc).__name__
        except Exception as exc:  # the page gets a sentence, the log the traceback; the session goes on
            log.exception("the run failed")
            view.status = "failed"
            view.error = f"the server could not run that: {exc}"
        finally:
            if view is self.view and view.status != "stepping":  # a newer run's stepper is its own
                left = [held.label for held in self.stepper.pending.values()]
                if left and view.status == "done":  # a pinned second copy, say: it will never arrive
                    self._say(f"the run is over; never delivered: {'; '.join(left)}")
                self.stepper.close()  # over: what still waits can change nothing (the choices stay)
            self.touch("run")
            self.touch("step")

    async def _place(self, request: Run) -> tuple[Place, Mapping[str, float], str]:
        """Where to run, with which inputs, under which title (compile errors raise here)."""
        given = [request.source is not None, request.example is not None, request.deployment is not None]
        if sum(given) != 1:
            raise ValueError("say what to run: a source, an example or a deployment (exactly one)")
        if request.deployment is not None:
            head = self._live(request.deployment)
            return (
                Place("deployment", deployment=request.deployment, circuit_id=head.circuit_id if head else ""),
                request.inputs,
                f"deployment {request.deployment}",
            )
        inputs: Mapping[str, float] = request.inputs
        if request.example is not None:
            if request.example >= len(EXAMPLES):
                shown = request.example + 1  # the page and its links count from 1
                raise ValueError(f"example {shown}: there are {len(EXAMPLES)} worked examples (1 to {len(EXAMPLES)})")
            example = EXAMPLES[request.example]
            source, inputs = example.source, request.inputs or example.inputs
        else:
            assert request.source is not None
            source = request.source
        circuit = (await asyncio.to_thread(compile_alone, source)).circuit
        if len(circuit.gates) > MAX_DEPLOY:
            raise ValueError(
                f"{len(circuit.gates)} gates: the page deploys up to {MAX_DEPLOY}; deploy a larger circuit with "
                "`gatemesh deploy` and run it here as a live deployment"
            )
        _ask_for_values(circuit, inputs, blank=False)  # before any gate is deployed for it
        faults = request.faults.text()
        if request.where == "hosts":
            if self.hosts is None and self.room:
                raise ValueError(f"room {self.room} has no gate hosts: they are the shared room's (leave ?room out)")
            if self.hosts is None:
                raise ValueError("no gate hosts: start the server with --hosts N to run on host processes")
            if faults != self.hosts.started_with:
                await self.targets.close()
                await self.hosts.restart_all(faults)
            alive = tuple(h.name for h in self.hosts.hosts.values() if h.state == "running")
            if not alive:
                raise ValueError("every gate host this server started is down: start one again")
            down = [f"{h.name} ({h.state})" for h in self.hosts.hosts.values() if h.state != "running"]
            if down:  # killed as the hosts restarted for new faults, say: its gates go elsewhere
                which = f"gate host {down[0]} is" if len(down) == 1 else f"gate hosts {', '.join(down)} are"
                self._say(f"{which} not running: the run's gates go on {', '.join(alive)}")
            return Place("hosts", circuit=circuit, hosts=alive, faults=faults), inputs, formula(circuit)
        return Place("here", circuit=circuit, faults=faults), inputs, formula(circuit)

    async def _run_on(self, view: RunView, target: Target, request: Run, inputs: Mapping[str, float]) -> None:
        runner = target.runner
        circuit = runner.circuit
        traced = len(circuit.gates) <= TRACE_LIMIT
        if request.step and not traced:
            raise ValueError(
                f"step mode: {len(circuit.gates)} gates send {circuit.messages_per_pass()} messages a pass, more than "
                f"anyone delivers by hand; step through circuits of up to {TRACE_LIMIT} gates"
            )
        view.circuit = circuit
        view.where = target.place.label()
        if request.deployment is not None:  # "on deployment NAME" is the where-label's
            view.title = formula(circuit)
        view.progress = render.Progress.of(circuit)
        self.touch("progress")
        view.summary = render.summary(circuit, runner.placement)
        if request.fill is not None:  # every input the request leaves out
            inputs = {**dict.fromkeys(circuit.inputs, request.fill), **inputs}
        if request.deployment is not None:
            _ask_for_values(circuit, inputs, blank=True)
        if traced:
            faults = target.place.faults  # a deployment's runs have its hosts' faults, never the page's
            recorder = WebRecorder(hold=request.step, on_begin=self._begun, faults_text=faults)
            recorder.listeners.append(self._on_event)
            injector = bool(faults) or target.place.kind == "deployment"  # a deployment's hosts may inject faults
            if not request.step:
                copies = "the fault injector"
            else:
                copies = "you, in step mode, or the fault injector" if injector else "you, in step mode,"
            explain_to(recorder, self._say, copies)
            runner.instrument(recorder=recorder)
            view.recorder = recorder
        elif len(circuit.gates) <= EXPLAIN_LIMIT:  # a vector clock per message grows with the circuit
            runner.instrument(observer=self._observer(circuit, runner.placement))
        else:  # nor is every message decoded and told: counted from its bytes
            runner.instrument(tally=self._tally)
            self._say(
                f"{len(circuit.gates):,} gates send {circuit.messages_per_pass():,} messages a pass: they are "
                f"counted above, not told one by one (runs of up to {EXPLAIN_LIMIT:,} gates are)"
            )
        if request.step:
            await self.stepper.watch(runner.deployment, circuit.readers, circuit.read_twice)
        view.status = "stepping" if request.step else "running"
        self._dirty.set()
        self.touch("run")
        try:
            timeout = request.timeout or run_timeout(len(circuit.gates))
            view.result = await runner.run(inputs, timeout=STEP_TIMEOUT if request.step else timeout)
            view.status = "done"
        finally:
            if view.recorder is not None:
                try:  # the run's last events: the picture is drawn with what came
                    await view.recorder.drain(0.5 if view.result else 0.2)
                except Exception:  # a defect of the recorder's: logged, and the run's own outcome stands
                    log.exception("room %s: reading the trace of run %s failed", self.room, view.run)
            self._dirty.set()

    def _observer(self, circuit: Circuit, placement: Mapping[str, str]) -> Observer:
        """An untraced run's messages, counted by phase and told as sentences."""
        hosts = set(placement.values())
        explainer = Explainer(circuit, None if hosts <= {"local"} else dict(placement))
        phases = {"feed": "feed", "forward": "forward", "backward": "backward", "grad": "report"}

        def observe(topic_name: str, message: Message) -> None:
            view = self.view
            phase = phases.get(message.type)
            if phase is not None and view.progress is not None:
                port = getattr(message, "port", "")
                view.progress.count(phase, f"{topic_name} {message.sender} {port}")  # one of each a pass
                self.touch("progress")
            self._say(explainer.explain(topic_name, message))

        return observe

    def _tally(self, run: str, kind: str) -> None:
        """A message of a run of the runner (the page runs one at a time) crossed the broker."""
        view = self.view
        if run in (self._replaced, "") or view.run not in ("", run):  # the run this one replaced, still sending
            return
        if view.progress is not None:
            view.run = view.run or run
            view.progress.count(PHASES[kind])  # the phase of each kind of topic
            self.touch("progress")

    def _begun(self, run: str) -> None:
        self.view.run = run
        if self.view.request is not None and self.view.request.step:
            self.stepper.begin(run)

    def _on_event(self, event: TraceEvent) -> None:
        """Every event of the shown run changes its pictures: a gate's receipt (in its batch, which
        reaches the recorder after the crossing) is what shows a value on the circuit."""
        view = self.view
        if event.run != view.run:
            return
        self._last_event = time.monotonic()
        if event.type == "cross" and event.msg is not None and view.progress is not None:
            view.progress.count(event.msg.phase, event.msg.id)
            self.touch("progress")
        self._dirty.set()

    def _dropped(self, held: Held) -> None:
        """A message the student dropped: into the run's trace (and so its sentence and pictures).
        A duplicate's second copy is recorded as such, and said here: the first was delivered,
        so the message was not lost (--explain numbers only what crossed or was lost)."""
        if held.run != self.stepper.run:
            return
        if held.copy:
            self._say(f"you drop the second copy of {held.message}: the receiver keeps the first")
        recorder = self.view.recorder
        if recorder is not None:
            recorder.dropped(held.run, held.topic, MESSAGE_ADAPTER.validate_json(held.payload), copy=held.copy)

    def _duplicated(self, held: Held) -> None:
        """A message the student duplicated (its first copy is at the broker): said, and into
        the run's trace, so the Lamport diagram draws the second copy waiting."""
        if held.run != self.stepper.run:
            return
        self._say(f"you duplicate {held.message}: one copy is delivered now, a second waits in the list")
        recorder = self.view.recorder
        if recorder is not None:
            recorder.duplicated(held.run, held.topic, MESSAGE_ADAPTER.validate_json(held.payload))

    def _say(self, sentence: str) -> None:
        self.view.say(sentence)
        self.touch("log")

    # -- background -----------------------------------------------------------------------

    async def _draw_loop(self) -> NoReturn:
        """Draw the pictures when something changed, at most every RENDER_INTERVAL seconds."""
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            started = loop.time()
            view = self.view
            try:
                pictures = await self._draw(view)
            except GatemeshError as exc:
                pictures = ("", str(exc), "", "")
            except Exception:  # a defect in the drawing: logged, said on the page; the server serves on
                log.exception("could not draw the pictures of run %s", view.run)
                failed = "the pictures could not be drawn (a defect: the server's log has it)"
                pictures = ("", failed, "", failed)
            if view is self.view and pictures != self.pictures:
                self.pictures = pictures
                self.touch("pictures")
                for client in self.clients:
                    client.wake.set()
            await asyncio.sleep(max(RENDER_INTERVAL, 2 * (loop.time() - started)))

    async def _draw(self, view: RunView) -> render.Pictures:
        circuit, recorder = view.circuit, view.recorder
        if circuit is None:  # no circuit yet (or none at all: it did not compile): no pictures
            return render.NO_PICTURES
        if not render.drawable(circuit):
            why = (
                f"{len(circuit.gates)} gates: the circuit figure stays readable up to {render.MAX_GATES}; "
                "the progress above counts the messages instead"
            )
            traced = "" if recorder is not None else f"; runs of more than {TRACE_LIMIT} gates are counted, not traced"
            return ("", why, "", f"{len(circuit.gates)} gates: too many columns to draw{traced}")
        if recorder is None or not view.run:  # before a run, or a watched run that carries no clocks
            note = UNTRACED if view.run else ""
            return (await asyncio.to_thread(render.bare_circuit, circuit, view.title), "", "", note)
        trace = recorder.trace()  # a snapshot, on the loop; drawn off it
        return await asyncio.to_thread(render.pictures, trace, view.run, view.title)

    async def _watch_loop(self) -> NoReturn:
        """Ask the gates who waits when a stepped run has nothing left to deliver; notice dead hosts."""
        while True:
            await asyncio.sleep(0.2)
            if self.hosts is not None:
                self.hosts.poll()
            view = self.view
            if self.stepped_run_is_stuck():
                target = self.targets.current
                if target is not None and not view.stuck and target.runner.expire(view.run):
                    view.stuck = True
                    self.touch("run")

    def stepped_run_is_stuck(self) -> bool:
        """The shown run is stepped and nothing can move it on: nothing waits to be delivered or
        replayed or waits for the broker's acknowledgement, every message delivered has been
        received (a gate may be slow to handle one: what it sends is still to come), and nothing
        changed for QUIET seconds."""
        view, stepper = self.view, self.stepper
        if view.status != "stepping" or not view.run or not stepper.idle:
            return False
        if time.monotonic() - max(stepper.last_change, self._last_event) <= QUIET:
            return False
        return view.recorder is None or view.recorder.in_flight(view.run) == 0


def run_timeout(gates: int) -> float:
    """A pass's timeout when the page gives none: it grows with the circuit, up to MAX_RUN_TIMEOUT."""
    return min(MAX_RUN_TIMEOUT, RUN_TIMEOUT + RUN_TIMEOUT_PER_GATE * gates)


def _ask_for_values(circuit: Circuit, inputs: Mapping[str, float], *, blank: bool) -> None:
    """ValueError in the page's words for inputs without a value (check_inputs says it in the
    command line's: name=value). `blank`: a live deployment's run, which "blank inputs" can fill."""
    missing, unread = missing_inputs(circuit, inputs)
    if not missing:
        return
    fields = "its field" if len(missing) == 1 else "their fields"
    fill = ', or give "blank inputs" a value' if blank else ""
    hint = f" (nothing reads {listed(unread)}: any value will do)" if unread else ""
    raise ValueError(f"no value for {listed(missing)}: fill in {fields} above{fill}, then run again{hint}")


async def _stopped(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel `tasks` (every run or watch before this one) and wait until they are over. A caller
    cancelled meanwhile (a newer request) stops waiting at once: its own cancellation is never
    taken for theirs, and the newer request waits for them too (it is given them all)."""
    await cancel_and_wait(tasks)
