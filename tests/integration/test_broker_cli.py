"""`python -m broker mosquitto`: it says so when it cannot serve, and it ends when its Mosquitto does.

A machine with Debian's package has a system Mosquitto on 1883: a second one there cannot
listen, and the wrapper must not print a URL that leads to the other broker (without the ACL
that --secure asked for).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.launch import free_port
from tests.processes import clean_env

pytestmark = pytest.mark.integration
BROKER = [sys.executable, "-m", "broker", "mosquitto"]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # after the name: state, then the parent's pid
                found.append(int(stat.parent.name))
    return found


def test_a_port_something_listens_on_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*BROKER, "--port", str(port)], capture_output=True, text=True, timeout=30, env=clean_env(), check=False
        )
    assert done.returncode == 1
    assert done.stdout == ""  # no URL
    assert done.stderr == f"error: 127.0.0.1:{port} is taken: something listens there already (a system Mosquitto?)\n"


def test_the_wrapper_ends_when_its_mosquitto_does() -> None:
    port = free_port()
    wrapper = subprocess.Popen(
        [*BROKER, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline() == f"mqtt://127.0.0.1:{port}\n"
        (child,) = children(wrapper.pid)
        os.kill(child, signal.SIGKILL)
        assert wrapper.wait(timeout=10) == 1
        assert wrapper.stderr is not None
        assert wrapper.stderr.read() == f"error: mosquitto exited with status {-signal.SIGKILL}\n"
    finally:
        wrapper.kill()
        wrapper.wait()
