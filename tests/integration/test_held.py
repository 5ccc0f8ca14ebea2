"""Step mode over a real broker: a held run moves only as the network actor delivers its messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gates.errors import ConnectionLost
from gates.transport import BrokerAddress
from orchestrator.compiler import compile_source
from orchestrator.deploy import in_process
from orchestrator.errors import RunTimeout
from orchestrator.result import RunResult
from orchestrator.runner import Runner
from tests.integration.test_trace import QF, QF_INPUTS, QF_RESULT
from tests.proxy import Relay, relay
from tests.tasks import cancelled, caught
from viz.circuit import state_at
from web.recording import WebRecorder
from web.stepper import Action, Stepper

pytestmark = pytest.mark.integration


async def waiting(stepper: Stepper, key: str, timeout: float = 5.0) -> str:
    """The id of message `key` once it is held (it is sent as a consequence of earlier deliveries)."""
    async with asyncio.timeout(timeout):
        while True:
            found = [held.id for held in stepper.pending.values() if held.key == key]
            if found:
                return found[0]
            await asyncio.sleep(0.01)


async def once_connected(stepper: Stepper, action: Action, message_id: str) -> None:
    """Do `action` as soon as the stepper takes it: it refuses while it connects again."""
    async with asyncio.timeout(10):
        while True:
            try:
                stepper.act(action, message_id)
                return
            except ConnectionLost:
                await asyncio.sleep(0.05)


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


class Held:
    def __init__(
        self,
        stepper: Stepper,
        runner: Runner,
        recorder: WebRecorder,
        duplicated: list[str],
        group: asyncio.TaskGroup,
    ) -> None:
        self.stepper, self.runner, self.recorder = stepper, runner, recorder
        self.duplicated = duplicated
        """The keys of the messages the stepper said it duplicated (once the broker had the first copy)."""
        self.group = group

    def start(self) -> asyncio.Task[RunResult | Exception]:
        """A run of (x+y)*z, in the stepper's task group: its result, or its error."""
        return self.group.create_task(caught(self.runner.run(QF_INPUTS, timeout=60)))

    async def do(self, key: str, action: str = "deliver") -> None:
        self.stepper.act(action, await waiting(self.stepper, key))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def held_qf(url: str, stepper_url: str | None = None) -> AsyncIterator[Held]:
    """(x+y)*z deployed with a stepper, which reaches the broker at `stepper_url` if given."""
    broker = BrokerAddress.parse(url)
    duplicated: list[str] = []
    stepper = Stepper(
        BrokerAddress.parse(stepper_url or url), lambda: None, on_duplicate=lambda h: duplicated.append(h.key)
    )
    recorder = WebRecorder(hold=True, on_begin=stepper.begin)
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(stepper.serve())
        try:
            async with in_process(compile_source(QF), broker, recorder=recorder, connections="shared") as runner:
                await stepper.watch(runner.deployment, runner.circuit.readers)
                stepper.arm()
                yield Held(stepper, runner, recorder, duplicated, group)
        finally:
            serving.cancel()


async def test_a_held_run_moves_only_as_its_messages_are_delivered(mosquitto_url: str) -> None:
    async with held_qf(mosquitto_url) as held:
        run = held.start()
        await settle()
        assert sorted(h.key for h in held.stepper.pending.values()) == [
            "feed orchestrator x",
            "feed orchestrator y",
            "feed orchestrator z",
        ]
        assert not run.done()
        await held.do("feed orchestrator z")
        await held.do("forward z z")
        await settle()
        values = state_at(held.recorder.trace(), held.stepper.run).values
        assert values == {"z": -4.0}  # delivered to f, which waits for add_1
        for key in ("feed orchestrator y", "forward y y", "feed orchestrator x", "forward x x"):
            await held.do(key)
        await held.do("forward add_1 add_1", "duplicate")  # one copy now, the second waits
        assert held.duplicated == []  # not before the broker has the first copy
        (copy,) = held.stepper.pending.values()
        assert copy.key == "forward add_1 add_1 #2"
        # named as the sentences and the Lamport diagram name it: its sender's event that sent it
        assert copy.label == f"forward 3.00: add_1 \u2192 f ({copy.msg_id}) (second copy)"
        await settle()
        assert held.duplicated == ["forward add_1 add_1"]
        sent = [e.msg.id for e in held.recorder.trace().events if e.type == "send" and e.msg and e.node == "add_1"]
        assert sent == [copy.msg_id]
        await held.do("forward f f")
        await held.do("backward orchestrator f 0")
        await held.do("forward add_1 add_1 #2")  # late: f has fired; the second copy changes nothing
        for key in ("backward f z 1", "backward f add_1 0", "backward add_1 y 1", "backward add_1 x 0"):
            await held.do(key)
        assert not run.done()
        await held.do("report x x", "hold")  # pinned: "deliver all" leaves it waiting
        held.stepper.deliver_all()  # the other two reports, and whatever comes
        await settle()
        assert [h.key for h in held.stepper.pending.values()] == ["report x x"]
        assert not run.done()
        await held.do("report x x", "hold")  # unpinned after "deliver all": it goes at once
        assert await run == QF_RESULT
        await held.recorder.drain(1.0)
        trace = held.recorder.trace()
        assert trace.replay() == QF_RESULT
        receipts = [e for e in trace.events if e.type == "receive" and e.node == "f" and e.msg and e.msg.src == "add_1"]
        assert [e.note for e in receipts] == ["", "duplicate"]
        (fired,) = [e for e in trace.events if e.type == "compute" and e.node == "f" and e.grad is None]
        assert receipts[0].seq < fired.seq < receipts[1].seq  # the copy came after f had fired
        actions = [c.action for c in held.stepper.history]
        assert (actions.count("deliver"), actions.count("duplicate"), len(actions)) == (16, 1, 19)


async def test_a_dropped_message_leaves_the_run_waiting_and_the_probe_names_who_waits(mosquitto_url: str) -> None:
    async with held_qf(mosquitto_url) as held:
        run = held.start()
        for leaf in ("x", "y", "z"):
            await held.do(f"feed orchestrator {leaf}")
            await held.do(f"forward {leaf} {leaf}")
        await held.do("forward add_1 add_1", "drop")
        await settle()
        assert not held.stepper.pending
        assert not run.done()
        assert held.runner.expire(held.stepper.run or "")
        await asyncio.sleep(0.05)  # the deadline has passed: the gates are being probed
        assert not held.runner.expire(held.stepper.run or "")  # said once (a second expire raised and ended the page)
        failed = await run
        assert isinstance(failed, RunTimeout)
        assert "mul(f) waits for input(s) add_1" in str(failed)
        assert failed.waiting_on == ["x", "y", "z", "add_1", "f"]  # the leaves wait for gradients
        (ended,) = [e for e in held.recorder.trace().events if e.type == "timeout"]
        assert ended.note == "nothing is left to deliver; probing the gates"  # not "no result after 60 s"


async def test_going_back_over_a_pin_and_an_unpin_leaves_the_message_unpinned(mosquitto_url: str) -> None:
    """A replay sets a hold's pin as it was chosen: toggling skipped the unpin, so the message
    stayed pinned, "deliver all" left it waiting and the replayed run never finished."""
    async with held_qf(mosquitto_url) as held:
        first = held.start()
        await held.do("feed orchestrator x", "hold")
        await held.do("feed orchestrator x", "hold")
        choices = list(held.stepper.history)
        assert [(c.label.split()[0], c.pinned) for c in choices] == [("pin", True), ("unpin", False)]
        await cancelled(first)
        held.stepper.arm(choices)  # "go back here": the next run replays both choices
        second = held.start()
        await waiting(held.stepper, "feed orchestrator x")
        await settle()
        assert not held.stepper.replay
        assert [h.pinned for h in held.stepper.pending.values() if h.key == "feed orchestrator x"] == [False]
        held.stepper.deliver_all()
        assert await second == QF_RESULT


async def test_the_stepper_hears_only_the_deployment_it_watches_last(mosquitto_url: str) -> None:
    """Every run on new gates (a new expression) is a new deployment: the stepper subscribed to
    each for the server's whole life. The page has one at a time, so it hears only the last."""
    async with held_qf(mosquitto_url) as held:
        await held.stepper.watch("another-deployment", {})
        run = held.start()
        await settle()
        assert held.stepper.pending == {}
        await held.stepper.watch(held.runner.deployment, held.runner.circuit.readers)
        await cancelled(run)
        second = held.start()
        await waiting(held.stepper, "feed orchestrator x")
        held.stepper.deliver_all()
        assert await second == QF_RESULT


@contextlib.asynccontextmanager
async def behind_a_relay(url: str) -> AsyncIterator[tuple[Relay, Held, asyncio.Task[RunResult | Exception], str]]:
    """(x+y)*z held, its stepper reaching the broker through a TCP relay, a run started, and the
    id of z's feed once it waits."""
    broker = BrokerAddress.parse(url)
    async with relay(broker.host, broker.port) as link, held_qf(url, f"mqtt://127.0.0.1:{link.port}") as held:
        run = held.start()
        yield link, held, run, await waiting(held.stepper, "feed orchestrator z")


async def test_a_delivery_the_broker_never_acknowledged_waits_again(mosquitto_url: str) -> None:
    """The stepper's link goes silent, a delivery leaves into it, and the link is cut before any
    PUBACK: the message may never have reached the broker, so it waits again and its choice is
    forgotten. Delivered again on the next connection, the run ends as it should."""
    async with behind_a_relay(mosquitto_url) as (link, held, run, z):
        link.silent = True
        held.stepper.act("deliver", z)
        assert z not in held.stepper.pending
        assert [c.action for c in held.stepper.history] == ["deliver"]
        link.silent = False  # for the next connection; what was swallowed stays swallowed
        link.cut()
        assert await waiting(held.stepper, "feed orchestrator z") == z
        assert held.stepper.history == []
        await once_connected(held.stepper, "deliver", z)
        await waiting(held.stepper, "forward z z")  # z got its feed this time
        held.stepper.deliver_all()
        assert await run == QF_RESULT


async def test_an_unacknowledged_duplicate_is_taken_back_with_its_copy(mosquitto_url: str) -> None:
    """Into a silent link, a delivery is unacknowledged: until the broker says, the stepper is
    not idle (the page would have called the run stuck and ended it). Cut, a duplicate waits
    again and the second copy it listed goes too, with the copy made of that copy and what was
    done with them (a replay would have waited for those copies), and a new duplicate's copy is
    `#2` again, however often the stepper refused it while it reconnected."""
    async with behind_a_relay(mosquitto_url) as (link, held, run, z):
        link.silent = True
        held.stepper.act("duplicate", z)
        copy = await waiting(held.stepper, "feed orchestrator z #2")
        held.stepper.act("duplicate", copy)  # a copy of the copy: it goes with it
        held.stepper.act("deliver", await waiting(held.stepper, "feed orchestrator z #3"))
        await held.do("feed orchestrator x", "drop")
        await held.do("feed orchestrator y", "drop")
        assert held.stepper.pending == {}
        assert not held.stepper.idle  # three deliveries await their PUBACK
        link.silent = False
        link.cut()
        assert await waiting(held.stepper, "feed orchestrator z") == z
        await settle()
        assert [h.key for h in held.stepper.pending.values()] == ["feed orchestrator z"]
        assert [c.label.split()[0] for c in held.stepper.history] == ["drop", "drop"]
        assert held.duplicated == []  # taken back: the trace is not told of a duplicate that may not have been
        await once_connected(held.stepper, "duplicate", z)
        assert [h.key for h in held.stepper.pending.values()] == ["feed orchestrator z #2"]
        await cancelled(run)
