"""The anchors: what MQTT itself costs here, with no gatemesh logic at all.

- one hop: aiomqtt client -> broker -> aiomqtt client (TCP_NODELAY on both), measured as half
  of a ping-pong round trip, at QoS 0 and QoS 1;
- a ring of relay actors in one process, each its own aiomqtt client that forwards what it
  receives to the next, with many messages in flight: hops per second;
- the same hop over gatemesh's own MQTT 3.1.1 session (gates/mqtt311.py), which carries the
  data plane: the floor a pass can actually reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from gates.lifecycle import cancel_and_wait
from gates.mqtt311 import QoS, Session
from gates.transport import BrokerAddress, client

WINDOW = 0.5
"""Seconds per rate sample: a rate is reported as the median of its windows, with their spread."""
PAYLOAD = b'{"type":"forward","circuit":"bench","sender":"x","run":"0123456789abcdef","value":-2.0}'


async def hop_latency(broker: BrokerAddress, qos: int, rounds: int = 500) -> list[float]:
    """Seconds per hop (half a round trip), one sample per round trip."""
    async with client(broker) as pinger, client(broker) as echoer:
        await pinger.subscribe("bench/pong", qos=qos)
        await echoer.subscribe("bench/ping", qos=qos)

        async def echo() -> None:
            async for message in echoer.messages:
                await echoer.publish("bench/pong", message.payload, qos=qos)

        samples: list[float] = []
        async with asyncio.TaskGroup() as group:
            echoing = group.create_task(echo())
            replies = aiter(pinger.messages)
            for index in range(rounds + 20):
                start = time.perf_counter()
                await pinger.publish("bench/ping", PAYLOAD, qos=qos)
                await anext(replies)
                if index >= 20:  # warm-up
                    samples.append((time.perf_counter() - start) / 2)
            await cancel_and_wait([echoing])
    return samples


async def session_hop_latency(broker: BrokerAddress, qos: QoS, rounds: int = 500) -> list[float]:
    """Seconds per hop (half a round trip) between two Sessions, one sample per round trip."""
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    echoer: Session | None = None

    def echo(name: str, payload: bytes) -> None:
        assert echoer is not None
        echoer.publish("bench/pong", payload)

    pinger = await Session.open(broker, lambda name, payload: replies.put_nowait(payload), qos=qos)
    echoer = await Session.open(broker, echo, qos=qos)
    try:
        await pinger.subscribe(["bench/pong"])
        await echoer.subscribe(["bench/ping"])
        samples: list[float] = []
        for index in range(rounds + 20):
            start = time.perf_counter()
            pinger.publish("bench/ping", PAYLOAD)
            await replies.get()
            if index >= 20:  # warm-up
                samples.append((time.perf_counter() - start) / 2)
    finally:
        pinger.close()
        echoer.close()
    return samples


async def relay_ring(
    broker: BrokerAddress, qos: int, relays: int = 50, in_flight: int = 100, seconds: float = 3.0
) -> list[float]:
    """Hops per second through a ring of `relays` actors with `in_flight` messages circulating,
    one sample per WINDOW seconds."""
    hops = 0
    counting = False
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(broker)) for _ in range(relays)]
        for index, mqtt in enumerate(clients):
            await mqtt.subscribe(f"bench/relay/{index}", qos=qos)

        async def relay(index: int) -> None:
            nonlocal hops
            mqtt, target = clients[index], f"bench/relay/{(index + 1) % relays}"
            async for message in mqtt.messages:
                await mqtt.publish(target, message.payload, qos=qos)
                if counting:
                    hops += 1

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(relay(i)) for i in range(relays)]
            for _ in range(in_flight):
                await clients[0].publish("bench/relay/1", PAYLOAD, qos=qos)
            await asyncio.sleep(1.0)  # warm-up: let the ring fill
            counting = True
            rates: list[float] = []
            for _ in range(max(1, round(seconds / WINDOW))):
                before, start = hops, time.perf_counter()
                await asyncio.sleep(WINDOW)
                rates.append((hops - before) / (time.perf_counter() - start))
            counting = False
            await cancel_and_wait(tasks)
    return rates
