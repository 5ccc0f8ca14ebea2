"""Rooms: the shared one every page joins, and rooms of their own that pages ask for by name.

`gatemesh serve` starts one Session, the shared room: a teacher projects it, and every page
that opens the plain address sees and drives the same run. Thirty students on one address
would overwrite each other's runs, so a page may ask for a room by name (`/?room=ada`): a
Session of its own, made when its first page comes, with its own runs, pictures, step mode and
deployment; every page that names it shares it (a student's two tabs, or a pair at one
exercise). A room has no gate hosts: they are the shared room's (a kill there would break
everyone's runs). A room closes, undeploying its gates, once no page has been connected to it
for `idle` seconds; at most `most` are open at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from web.session import Session

log = logging.getLogger(__name__)

ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
ROOM_RULE = "letters, digits, '_' and '-', 40 at most"
MOST_ROOMS = 40
ROOM_IDLE = 600.0
"""Seconds a room stays open with no page connected (a reload, a laptop lid closed for a while)."""
OPEN_TIMEOUT = 15.0


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
            raise ValueError(f"room {name[:40]!r}: a room's name is {ROOM_RULE}")
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.most:
                raise ValueError(
                    f"room {name}: this server has {self.most} rooms open, the most it keeps; join one of "
                    "them, or the shared room (leave ?room out of the address)"
                )
            assert self._group is not None, "the rooms are not being served"
            room = self.rooms[name] = _Room(self.make_room(name))
            room.task = self._group.create_task(self._hold(name, room))
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
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(room.session.serve())
                await room.session.ready.wait()
                room.opened.set()
                log.info("room %s is open", name)
        except* Exception as failure:  # the page that asked is told; the server and the other rooms go on
            room.error = "; ".join(str(exc) or type(exc).__name__ for exc in failure.exceptions)
            log.warning("room %s failed: %s", name, room.error)
        finally:
            room.opened.set()
            if self.rooms.get(name) is room:
                del self.rooms[name]

    def close_idle(self) -> list[str]:
        """Close every room no page has been connected to for `idle` seconds; their names."""
        now = time.monotonic()
        closed = []
        for name, room in list(self.rooms.items()):
            if room.session.clients or not room.opened.is_set():
                room.empty_since = None
            elif room.empty_since is None:
                room.empty_since = now
            elif now - room.empty_since >= self.idle and room.task is not None:
                room.task.cancel()  # its Session undeploys its gates on the way out
                del self.rooms[name]
                closed.append(name)
                log.info("room %s closed: no page for %.0f s", name, now - room.empty_since)
        return closed
