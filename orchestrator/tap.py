"""The recorder's tap on the broker: every message of a deployment, kept as the bytes that came.

A traced run's trace has a `cross` event for every message that passes the broker, and the
gates' own events arrive as messages too. Read one by one on the Runner's connection, they
cost a traced pass as much as the gates' work did (bench/tracing.py): every one framed,
acknowledged, routed and handed over while the pass waits for its next hop. The Runner's
connection therefore hears only what its runs need, and the Recorder has a connection of its
own, a Tap:

- it subscribes to the deployment's topics at QoS 0, so the broker expects no PUBACK from it;
- once subscribed, it keeps every read as it came, with the time it came (Session.capture):
  no framing, no decoding, one append per read;
- the recorder frames and decodes those bytes (TapStream) only when someone reads the trace,
  or at once if someone listens to it as it happens (--explain, the web page).

A crossing's time is the time of the read that completed it: when the tap heard it. A new
connection starts a new byte stream; the tap says so first (`Tapped` with no bytes), and a
reconnection loses what crossed meanwhile, as the recorder's `missing` then says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import NoReturn

from gates.errors import ProtocolViolation
from gates.lifecycle import stay_connected
from gates.mqtt311 import Session
from gates.mqtt_codec import MAX_PACKET, PINGRESP, PUBLISH, malformed, published, split_packets
from gates.protocol import ROOT, topic
from gates.transport import BrokerAddress

log = logging.getLogger(__name__)

Tapped = tuple[int, bytes]
"""(time read in ns, the bytes read), or (0, b"") where a new connection's stream begins."""
NEW_STREAM: Tapped = (0, b"")


class Tap:
    """Holds a QoS 0 subscription to one deployment's topics and hands on every byte it reads."""

    def __init__(
        self,
        broker: BrokerAddress,
        deployment: str,
        on_bytes: Callable[[Tapped], None],
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self.broker = broker
        # `+/+` is every gate's topic; the control topic (probes, releases) has one level fewer
        self.filters = [f"{ROOT}/{deployment}/+/+", topic(deployment, "control")]
        self.on_bytes = on_bytes
        self.on_message = on_message
        """For a message read in the same read as the SUBACK, before capturing began."""

    async def hold(self, started: asyncio.Future[None] | None = None) -> NoReturn:
        """Connect, subscribe, capture; again after every lost connection. `started` resolves
        once the first subscription is acknowledged; a first connection that fails raises."""
        await stay_connected(
            lambda: Session.open(self.broker, self.on_message, qos=0),
            up=self._up,
            down=lambda session, error: None,
            started=started,
            retry_first=False,
            name=f"the trace tap on {self.broker}",
        )

    async def _up(self, session: Session) -> None:
        await session.subscribe(self.filters)
        self.on_bytes(NEW_STREAM)
        session.capture(lambda t_ns, data: self.on_bytes((t_ns, data)))


class TapStream:
    """Frames the tapped bytes into messages again, read by read (a packet may span reads)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lost = False
        """The stream broke MQTT: where its next packet starts is unknown until a new connection."""

    def read(self, tapped: Tapped) -> Iterator[tuple[int, str, bytes]]:
        """(t_ns, topic, payload) of every message the bytes complete."""
        t_ns, data = tapped
        if not data:  # a new connection: nothing continues from the last one
            self._buffer.clear()
            self._lost = False
            return
        if self._lost:
            return
        self._buffer += data
        try:
            packets = split_packets(self._buffer, MAX_PACKET)
        except ProtocolViolation as exc:
            log.warning("trace tap: %s; nothing more is read from this connection", exc)
            self._buffer.clear()
            self._lost = True
            return
        for first, body in packets:
            if first & 0xF0 == PINGRESP:
                continue
            problem = malformed(first, body)
            if problem is not None or first & 0xF0 != PUBLISH:
                log.warning("trace tap: the broker sent %s; skipped", problem or f"packet type 0x{first:02x}")
                continue
            try:
                name, _, payload = published(first, body)
            except UnicodeDecodeError:
                log.warning("trace tap: a PUBLISH whose topic is not UTF-8; skipped")
                continue
            yield t_ns, name, payload
