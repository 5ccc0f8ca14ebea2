"""The HTTP side of `gatemesh serve`: the page, its assets, and one WebSocket per page.

Why a WebSocket from a small Starlette server (not the page speaking MQTT itself): the page
needs the pictures viz/ draws in Python (one drawing of a circuit), the run's trace as the
orchestrator records it, and requests that are validated before anything acts on them; one
ordered, two-way channel carries the page's requests and the server's pushes, and the broker
stays on loopback, unreachable from the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from gates.errors import TransportError
from orchestrator.errors import GatemeshError
from web.commands import BadRequest, parse_request
from web.rooms import BadRoomName, Rooms
from web.session import Session
from web.view import Client

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PUSH_INTERVAL = 0.15
"""Seconds between two pushes to one page, at least: a 1,000-gate pass stays a few pushes a second."""
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Adds HEADERS to every HTTP response: the page runs only its own script, from here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))  # type: ignore[call-overload]
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)  # type: ignore[arg-type]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""The host names a page of a server on loopback is reached by."""


def make_app(rooms: Rooms, names: frozenset[str] | None) -> Starlette:
    """The server's routes. `names`: the host names a page may reach it by (None: any, for a
    server bound where anyone may reach it anyway). A page's WebSocket joins the room its
    address names (/ws?room=NAME; none: the shared room)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def events(websocket: WebSocket) -> None:
        if not _same_origin(websocket, names):
            await websocket.close(code=1008, reason="cross-origin connections are refused")
            return
        await websocket.accept()
        try:
            session = await rooms.enter(websocket.query_params.get("room"))
        except ValueError as exc:  # said on the page; it tries again later, unless the name itself is wrong
            await websocket.send_json({"type": "problem", "message": str(exc), "final": isinstance(exc, BadRoomName)})
            await websocket.close(code=1008 if isinstance(exc, BadRoomName) else 1013, reason="no room")
            return
        client = session.connect()
        try:
            async with asyncio.TaskGroup() as group:
                pushing = group.create_task(_push(websocket, session, client))
                try:
                    await _listen(websocket, session, client)
                finally:
                    pushing.cancel()
        except* (WebSocketDisconnect, ConnectionError):
            pass
        finally:
            session.clients.discard(client)

    routes = [
        Route("/", index),
        WebSocketRoute("/ws", events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(SecurityHeaders)
    return app


def _same_origin(websocket: WebSocket, names: frozenset[str] | None) -> bool:
    """A page from another site may not drive this one (the server trusts whoever reaches it);
    nor may one reached by a name that is not this server's: a site whose name its owner points
    at 127.0.0.1 (DNS rebinding) is the same origin as itself."""
    host = websocket.headers.get("host", "")
    try:
        if names is not None and urlsplit(f"//{host}").hostname not in names:
            return False
        origin = websocket.headers.get("origin")
        return origin is None or urlsplit(origin).netloc == host
    except ValueError:  # a malformed header (`[::1`): refused, not a traceback
        return False


async def _push(websocket: WebSocket, session: Session, client: Client) -> None:
    while True:
        await client.wake.wait()
        client.wake.clear()
        for message in session.changes(client):
            await websocket.send_json(message)
        if client.gone:  # its room is over: the page connects again, to a room that works
            await websocket.close(code=1012, reason="the room closed")
            return
        await asyncio.sleep(PUSH_INTERVAL)


async def _listen(websocket: WebSocket, session: Session, client: Client) -> None:
    while True:
        frame = await websocket.receive()  # receive_text() raised KeyError on a binary frame, outside the try
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000))
        try:
            text = frame.get("text")
            request = parse_request(text if text is not None else frame.get("bytes") or b"")
            await session.handle(request, client)
        except (BadRequest, GatemeshError, KeyError, ValueError, TransportError, TimeoutError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            client.reply({"type": "problem", "message": str(message) or type(exc).__name__})
        except Exception as exc:  # the page gets a sentence, the server's log the traceback
            log.exception("request failed")
            with contextlib.suppress(Exception):
                client.reply({"type": "problem", "message": f"the server could not do that: {exc}"})
