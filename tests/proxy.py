"""A TCP relay between a client and the broker that a test can silence or cut: a real network
fault (bytes stop flowing, or the connection drops) without touching the broker or the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from broker.launch import free_port


class Relay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.silent = False
        """While set, bytes are swallowed in both directions and no connection is closed: a dead link."""
        self._writers: list[asyncio.StreamWriter] = []
        self._group = asyncio.TaskGroup()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._group.create_task(self._join(reader, writer))

    async def _join(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, upstream_writer]
        self._group.create_task(self._pipe(reader, upstream_writer))
        self._group.create_task(self._pipe(upstream_reader, writer))

    def cut(self) -> None:
        """Drop every relayed connection (new ones are still accepted)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@contextlib.asynccontextmanager
async def relay(target_host: str, target_port: int) -> AsyncIterator[Relay]:
    proxy = Relay(target_host, target_port)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", proxy.port)
    async with proxy._group:
        try:
            yield proxy
        finally:
            server.close()
            proxy.cut()
