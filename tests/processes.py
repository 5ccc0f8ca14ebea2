"""Real processes for the integration tests: the `gatemesh` CLI and gate hosts (`python -m gates`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gates.host import default_name
from gates.protocol import HostPresence, host_topic
from gates.transport import BrokerAddress, read_retained


def clean_env() -> dict[str, str]:
    """The environment without GATEMESH_BROKER, so a developer's setting cannot steer a test."""
    return {k: v for k, v in os.environ.items() if k != "GATEMESH_BROKER"}


def gatemesh(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`gatemesh ARGS` in a process of its own; `env`: variables set for it (GATEMESH_BROKER, say);
    `cwd`: the directory it runs in (a user's, with their files)."""
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", *args]
    environment = {**clean_env(), **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=environment, cwd=cwd
    )


def presence(url: str, name: str) -> HostPresence | None:
    found = asyncio.run(read_retained(BrokerAddress.parse(url), [host_topic(name)]))
    payload = found.get(host_topic(name))
    return HostPresence.model_validate_json(payload) if payload else None


class GateHostProcess:
    """`python -m gates --broker URL --name NAME` (or any argv), started and stopped by a test."""

    def __init__(
        self, url: str, name: str | None, *, argv: Sequence[str] | None = None, netns: str | None = None
    ) -> None:
        """name None: the host names itself, `host-<hostname>-<pid>` (what compose replicas do)."""
        self.url = url
        command = list(argv) if argv is not None else ["--broker", url, *(["--name", name] if name else [])]
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process, closed with this object)
        """The host's stderr: a file, not a pipe, which a host warning about much junk would fill and block on."""
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gates", *command, "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=clean_env(),
        )
        self.name = name or default_name(pid=self.process.pid)  # `ip netns exec` execs: same pid

    def wait_online(self, timeout: float = 20) -> HostPresence:
        """Block until this process has announced itself (a previous incarnation does not count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"host {self.name} exited: {self.stderr()}")
            found = presence(self.url, self.name)
            if found is not None and found.state == "online" and found.pid == self.process.pid:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"host {self.name} did not come online within {timeout} s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def stderr(self) -> str:
        """What the host wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")
