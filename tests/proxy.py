"""A TCP relay between a client and the broker that a test can silence or cut: a real network
fault (bytes stop flowing, or the connection drops) without touching the broker or the client.

It can also make a good broker look like one that cannot carry gatemesh's control plane, by
what it does with the retained messages the broker sends for a new wildcard subscription:
`retained="never"` drops them, as RabbitMQ 3.10's MQTT plugin never sends them;
`retained="late"` holds each back LATE seconds, as aedes sends them after the SUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Literal

from broker.launch import free_port
from gates.mqtt_codec import PUBLISH, SUBSCRIBE, remaining_length, split_packets

RetainedToWildcards = Literal["deliver", "never", "late"]
LATE = 0.3
"""Seconds a `late` relay holds back a retained message (a marker published after subscribing
comes back within milliseconds)."""


class Relay:
    def __init__(self, target_host: str, target_port: int, *, retained: RetainedToWildcards = "deliver") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.silent = False
        """While set, bytes are swallowed in both directions and no connection is closed: a dead link."""
        self.retained = retained
        self.withheld: list[str] = []
        """Topics of the retained messages this relay dropped or delayed."""
        self._writers: list[asyncio.StreamWriter] = []
        self._group = asyncio.TaskGroup()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    async def _pipe_packets(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep: Callable[[int, bytes], bool],
    ) -> None:
        """Relay whole MQTT packets, each only if `keep(first byte, body)` says so."""
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                buffer += data
                for first, body in split_packets(buffer, 2**28):
                    if keep(first, body) and not self.silent:
                        writer.write(bytes((first,)) + remaining_length(len(body)) + body)
                await writer.drain()
        writer.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._group.create_task(self._join(reader, writer))

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, upstream_writer]
        if self.retained == "deliver":
            self._group.create_task(self._pipe(reader, upstream_writer))
            self._group.create_task(self._pipe(upstream_reader, writer))
            return
        exact: set[str] = set()  # this client's filters without wildcards: their retained messages pass

        def subscribed(first: int, body: bytes) -> bool:
            if first == SUBSCRIBE:
                at = 2
                while at < len(body):
                    size = int.from_bytes(body[at : at + 2], "big")
                    name = body[at + 2 : at + 2 + size].decode()
                    if "+" not in name and "#" not in name:
                        exact.add(name)
                    at += 2 + size + 1
            return True

        def delivered(first: int, body: bytes) -> bool:
            if first & 0xF0 != PUBLISH or not first & 0x01:  # not a retained message
                return True
            name = body[2 : 2 + int.from_bytes(body[:2], "big")].decode()
            if name in exact:
                return True
            self.withheld.append(name)
            if self.retained == "late":
                packet = bytes((first,)) + remaining_length(len(body)) + body
                self._group.create_task(self._later(writer, packet))
            return False

        self._group.create_task(self._pipe_packets(reader, upstream_writer, subscribed))
        self._group.create_task(self._pipe_packets(upstream_reader, writer, delivered))

    async def _later(self, writer: asyncio.StreamWriter, packet: bytes) -> None:
        await asyncio.sleep(LATE)
        if not writer.is_closing():
            writer.write(packet)

    def cut(self) -> None:
        """Drop every relayed connection (new ones are still accepted)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@contextlib.asynccontextmanager
async def relay(
    target_host: str, target_port: int, *, retained: RetainedToWildcards = "deliver"
) -> AsyncIterator[Relay]:
    proxy = Relay(target_host, target_port, retained=retained)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", proxy.port)
    async with proxy._group:
        try:
            yield proxy
        finally:
            server.close()
            proxy.cut()
