"""A task's life: started, kept connected, stopped for sure.

Stopping: on Python 3.11, `asyncio.wait_for` (which aiomqtt uses for every publish and
subscribe) can swallow a cancellation that arrives just as the awaited operation completes
(CPython gh-86296, fixed in 3.12). A gate cancelled at that instant would keep serving and
its task group would wait forever. `cancel_until_done` works around it for tasks: it cancels
again until the task is done; `cancel_and_wait` and a gate host's signal handler use it. (The
transport's `_go_on_cancelling` is the other half: aiomqtt calls that end as if nothing
happened in a task being cancelled raise CancelledError there.) `despite_cancellation` runs a
clean-up that must finish in such a task, in a task of its own.

Staying connected: `stay_connected` is the one reconnect loop of the data plane's sessions
(a host's shared connection, the orchestrator's runner): open, set up, hold until lost, back
off, again; "started" is a future the caller passes in (trio's `task_status.started()`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NoReturn, Protocol, TypeVar

from gates.errors import NotAuthorised, TransportError

log = logging.getLogger(__name__)

RECANCEL_AFTER = 0.05


def cancel_until_done(task: asyncio.Task[object], every: float = RECANCEL_AFTER) -> None:
    """Cancel `task` now, and again every `every` seconds until it is done (gh-86296)."""
    if not task.done():
        task.cancel()
        asyncio.get_running_loop().call_later(every, cancel_until_done, task, every)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks and return once every one of them has finished."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        cancel_until_done(task)
    if pending:
        await asyncio.wait(pending)


async def despite_cancellation(work: Callable[[], Coroutine[Any, Any, object]], seconds: float) -> None:
    """Run `work` to its end (at most `seconds`: TimeoutError past it) in a `finally` of a task
    being cancelled: a clean-up that must not be cut short (a deployment made for one run,
    undeployed after a Ctrl-C). An await there works, but the transport ends its calls with
    CancelledError in a task that is cancelling (gates/transport.py, _go_on_cancelling): so
    `work` runs in a task of its own, which is not. The caller's cancellation is left as it
    was; a new one (a second Ctrl-C) cancels the clean-up too. What `work` raises comes out as
    it is, not in an exception group: a caller in a `finally` suppresses the failures it
    expects (Python 3.11's `contextlib.suppress` does not look inside groups), and any other
    replaces the error the `finally` was running for."""
    timed_out = False
    try:
        async with asyncio.TaskGroup() as group:
            cleaning = group.create_task(work())
            try:
                async with asyncio.timeout(seconds):
                    await asyncio.wait({cleaning})  # its failure is the group's to raise
            except TimeoutError:
                timed_out = True
                cleaning.cancel()
    except BaseExceptionGroup as failed:
        raise first_failure(failed) from failed
    if timed_out:
        raise TimeoutError(f"a clean-up did not finish within {seconds:g} s")


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (possibly nested) exception group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that made a task group fail (its first leaf that is not a cancellation)."""
    return next((e for e in leaves(group) if not isinstance(e, asyncio.CancelledError)), group)


RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Back-off between reconnection attempts (the last one repeats)."""


class Backoff:
    """Delays between reconnection attempts, growing to a cap; `reset` after a success."""

    def __init__(self) -> None:
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = RECONNECT_DELAYS[min(self.attempt, len(RECONNECT_DELAYS) - 1)]
        self.attempt += 1
        return delay


class Connection(Protocol):
    """What `stay_connected` holds: a connection that says when it is lost (gates/mqtt311.Session)."""

    @property
    def lost(self) -> asyncio.Future[TransportError]: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


async def stay_connected(
    connect: Callable[[], Awaitable[C]],
    *,
    up: Callable[[C], Awaitable[None]],
    down: Callable[[C | None, TransportError | None], None],
    started: asyncio.Future[None] | None = None,
    retry_first: bool = True,
    name: str = "connection",
) -> NoReturn:
    """Hold a connection for good: connect, `up`, wait until it is lost, `down`, back off, again.

    - `up(connection)` runs on each new connection (subscribe, resend); only then is it up, and
      the first time `started` is resolved.
    - `down(connection, error)` runs as each attempt ends, before any waiting: `connection` is
      None if none was made, `error` None if the attempt ended in anything but a
      TransportError (the task being cancelled, or a defect, which then propagates).
    - A first connection that fails raises its TransportError if not `retry_first` (a caller
      that needs the broker now); else every failure is retried (a host that starts first),
      except a first one refused for its credentials (NotAuthorised): the broker is there, and
      asking again with the same password will not help.
    """
    backoff = Backoff()
    was_up = False
    while True:
        connection: C | None = None
        error: TransportError | None = None
        try:
            connection = await connect()
            await up(connection)
            was_up = True
            if started is not None and not started.done():
                started.set_result(None)
            backoff.reset()
            error = await asyncio.shield(connection.lost)  # a cancelled wait must not cancel `lost`
        except TransportError as exc:
            error = exc
        finally:
            down(connection, error)
            if connection is not None:
                connection.close()
        if not was_up and (not retry_first or isinstance(error, NotAuthorised)):
            raise error
        delay = backoff.next()
        # a connection that was never up is its owner's to report (a host says "no broker
        # connection" once per try); a connection lost is news
        log.log(logging.WARNING if was_up else logging.DEBUG, "%s: %s; reconnecting in %g s", name, error, delay)
        await asyncio.sleep(delay)
