"""A test that outlives its timeout is failed with every thread's and every asyncio task's stack.

pytest-timeout fails a test after `timeout` seconds (pyproject.toml) and prints the stacks of
the *other* threads. A hung asyncio test is one thread that waits in `select()`: its threads'
stacks say nothing about where each task waits. This plugin takes over pytest-timeout's
signal timer and, when it fires, writes to the real stderr (pytest's capture would hide it):

- every thread's stack, by `faulthandler`;
- every task of the event loop running in the main thread, with its await chain down to the
  future it waits for (CPython 3.11's `Task.print_stack` shows only the outermost frame);

then fails the test. Should the failure not end the test (code that swallows the exception),
the process is dumped again and ended `HARD_EXIT_AFTER` seconds later: CI gets a stack dump and
a result, never a silent stall.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any, TextIO

import pytest

HARD_EXIT_AFTER = 30.0


def await_chain(coro: Any) -> list[str]:
    """The frames of a coroutine and of everything it awaits, outermost first, then what it waits on."""
    lines: list[str] = []
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        frame: FrameType | None = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is None:  # a future's iterator, say: the task's repr shows what it waits for
            break
        lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return lines


def dump_tasks(out: TextIO) -> None:
    """Every task of the event loop running in this thread, with its await chain."""
    loop = asyncio._get_running_loop()  # the signal handler runs in the loop's thread
    if loop is None:
        out.write("no event loop is running in the main thread\n")
        return
    tasks = asyncio.all_tasks(loop)
    out.write(f"{len(tasks)} asyncio task(s):\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"- {task!r}"[:400] + "\n")
        out.write("\n".join(await_chain(task.get_coro())) + "\n")


def dump_everything(title: str) -> None:
    out = sys.__stderr__
    if out is None:
        return
    out.write(f"\n{'+' * 30} {title} {'+' * 30}\n")
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    try:
        dump_tasks(out)
    except Exception:  # a dump must never hide the timeout itself
        traceback.print_exc(file=out)
    out.write(f"{'+' * 30} end of {title} {'+' * 30}\n")
    out.flush()


def _hard_exit(nodeid: str) -> None:
    dump_everything(f"still running {HARD_EXIT_AFTER:g} s after its timeout: {nodeid}; exiting")
    os._exit(1)


class StackDumpingTimeout:
    """pytest-timeout's `pytest_timeout_set_timer` for the signal method, with the dumps above."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
            return None  # pytest-timeout's own thread method
        backstop: list[threading.Timer] = []

        def fire(signum: int, frame: FrameType | None) -> None:
            dump_everything(f"Timeout >{settings.timeout:g} s: {item.nodeid}")
            timer = threading.Timer(HARD_EXIT_AFTER, _hard_exit, (item.nodeid,))
            timer.daemon = True
            timer.start()
            backstop.append(timer)
            pytest.fail(f"Timeout >{settings.timeout:g} s; every thread's and task's stack is on stderr above")

        def cancel() -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            for timer in backstop:
                timer.cancel()

        item.cancel_timeout = cancel  # type: ignore[attr-defined]  # what pytest-timeout's cancel hook calls
        signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, settings.timeout)
        return True
