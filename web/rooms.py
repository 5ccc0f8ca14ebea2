"""Rooms: the shared one every page joins, and rooms of their own that pages ask for by name.

`gatemesh serve` starts one Session, the shared room: a teacher projects it, and every page
that opens the plain address sees and drives the same run. Thirty students on one address
would overwrite each other's runs, so a page may ask for a room by name (`/?room=ada`): a
Session of its own, made when its first page comes, with its own runs, pictures, step mode and
deployment; every page that names it shares it (a student's two tabs, or a pair at one
exercise). A room has no gate hosts: they are the shared room's (a kill there would break
everyone's runs). A room closes, undeploying its gates, once no page has been connected to it
for `idle` seconds; at most `most` are open at once (a new one closes the room left longest
ago, if any is empty). A room that fails tells its pages why and closes their sockets: they
connect again, to a new room of the name.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from gates.lifecycle import leaves
from web.session import Session

log = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
ROOM_RULE = "letters, digits, '_' and '-', 40 at most"
MOST_ROOMS = 40
ROOM_IDLE = 600.0
"""Seconds a room stays open with no page connected (a reload, a laptop lid closed for a while)."""
OPEN_TIMEOUT = 15.0


class BadRoomName(ValueError):
    """A name no room can have: asking again changes nothing."""


@dataclass
class _Room:
    session: Session
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the room is up, or could not be opened (`error`)."""
    error: str = ""
    empty_since: float | None = None
    task: asyncio.Task[None] | None = None


class Rooms:
    """The shared Session and the rooms made on demand; `serve()` holds them all."""

    def __init__(
        self,
        shared: Session,
        make_room: Callable[[str], Session],
        *,
        most: int = MOST_ROOMS,
        idle: float = ROOM_IDLE,
    ) -> None:
        self.shared = shared
        self.make_room = make_room
        self.most = most
        self.idle = idle
        self.rooms: dict[str, _Room] = {}
        self._group: asyncio.TaskGroup | None = None

    async def serve(self) -> NoReturn:
        """Serve the shared room, and close the rooms nobody has been in for `idle` seconds."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self.shared.serve())
            while True:
                await asyncio.sleep(min(self.idle / 4, 30.0))
                self.close_idle()
        raise AssertionError("unreachable")  # pragma: no cover

    async def enter(self, name: str | None) -> Session:
        """The room a page asks for (None or "": the shared one), opened if it is not yet.

        ValueError, naming what is wrong, for a bad name, a full server or a room that cannot open."""
        if not name:
            return self.shared
        if not ROOM_NAME.fullmatch(name):
            raise BadRoomName(f"room {name[:40]!r}: a room's name is {ROOM_RULE}")
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.most and not self._close_longest_empty():
                raise ValueError(
                    f"room {name}: this server has {self.most} rooms open, each with a page in it, the most it "
                    "keeps; the page tries again, or join the shared room (leave ?room out of the address)"
                )
            if self._group is None:
                raise ValueError(f"room {name}: the server is not serving rooms (it is starting or stopping)")
            room = self.rooms[name] = _Room(self.make_room(name))
            try:
                room.task = self._group.create_task(self._hold(name, room))
            except RuntimeError:  # the group is shutting down: the server stops
                del self.rooms[name]
                raise ValueError(f"room {name}: the server is stopping") from None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await room.opened.wait()
        except TimeoutError:
            raise ValueError(f"room {name}: not open after {OPEN_TIMEOUT:g} s") from None
        if room.error:
            raise ValueError(f"room {name} could not open: {room.error}")
        room.empty_since = None
        return room.session

    async def _hold(self, name: str, room: _Room) -> None:
        """Serve one room until it is closed (cancelled) or fails; either way it is forgotten."""
        why = f"room {name} closed: the server is stopping"
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(room.session.serve())
                await room.session.ready.wait()
                room.opened.set()
                log.info("room %s is open", name)
        except* Exception as failure:  # its pages are told; the server and the other rooms go on
            room.error = "; ".join(str(exc) or type(exc).__name__ for exc in leaves(failure))
            why = f"room {name} failed: {room.error}; the page connects again, to a new room {name}"
            log.warning("room %s failed: %s", name, room.error)
        finally:
            room.error = room.error or ("" if room.opened.is_set() else "the server is stopping")
            room.opened.set()
            if self.rooms.get(name) is room:
                del self.rooms[name]
            for client in list(room.session.clients):
                client.leave(why)

    def _close_longest_empty(self) -> bool:
        """Close the open room whose last page left longest ago (or that has none), to make room."""
        empty = [(room.empty_since or time.monotonic(), name) for name, room in self.rooms.items() if self._empty(room)]
        if not empty:
            return False
        self._close(min(empty)[1])
        return True

    @staticmethod
    def _empty(room: _Room) -> bool:
        return room.opened.is_set() and not room.session.clients

    def _close(self, name: str) -> None:
        room = self.rooms.pop(name)
        if room.task is not None:
            room.task.cancel()  # its Session undeploys its gates on the way out

    def close_idle(self) -> list[str]:
        """Close every room no page has been connected to for `idle` seconds; their names."""
        now = time.monotonic()
        closed = []
        for name, room in list(self.rooms.items()):
            if not self._empty(room):
                room.empty_since = None
            elif room.empty_since is None:
                room.empty_since = now
            elif now - room.empty_since >= self.idle:
                self._close(name)
                closed.append(name)
                log.info("room %s closed: no page for %.0f s", name, now - room.empty_since)
        return closed
