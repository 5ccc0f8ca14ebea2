"""Gate hosts for the page: the host processes `gatemesh serve --hosts N` started, and the
cluster as the broker announces it (every host's presence, every deployment's record).

The processes are ordinary `python -m gates` hosts; "kill host" sends one SIGKILL, so the
broker, not the server, announces the loss (the host's last will), exactly as for any host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote

from pydantic import ValidationError

from broker.security import SecureDir, host_user
from gates.errors import TransportError
from gates.lifecycle import Backoff
from gates.protocol import HostPresence, deployment_topic, host_topic, last_level
from gates.transport import BrokerAddress, connect, incoming, subscribe_all
from orchestrator.records import RETAINED_RECORD, DeploymentHead, head_of

log = logging.getLogger(__name__)
STOP_GRACE = 5.0
PR_SET_PDEATHSIG = 1


@dataclass
class HostProcess:
    name: str
    process: asyncio.subprocess.Process | None = None
    state: str = "starting"
    """starting, running, stopping, killed or exited (code N)."""


class HostProcesses:
    """Gate host processes on one broker, one per name."""

    def __init__(
        self,
        broker: BrokerAddress,
        names: list[str],
        on_change: Callable[[], None],
        accounts: Callable[[str], str] | None = None,
    ) -> None:
        self.broker = broker
        self.on_change = on_change
        self.accounts = accounts
        """With a secured broker: host name -> its broker URL with its own account (names come from it)."""
        self.faults = ""
        """The faults a host started now is given."""
        self.started_with: str | None = ""
        """The faults every host was last started with; None while a restart is under way, or
        after one was cut short (a newer run): the next run that asks restarts them all again."""
        self.online: Callable[[str, int], Coroutine[Any, Any, None]] | None = None
        """Returns once host (name, pid) has announced itself (set by the session)."""
        self.hosts = {name: HostProcess(name) for name in names}
        self._starting = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    async def start(self, name: str) -> None:
        """Start host `name` unless it runs (one start at a time: two pages pressing "start" at
        once would both find it stopped, and the first process would be lost track of)."""
        async with self._starting:
            host = self.hosts[name]
            if host.process is not None and host.process.returncode is None:
                return
            url = self.accounts(name) if self.accounts is not None else str(self.broker)
            argv = [sys.executable, "-m", "gates", "--name", name, "--log-level", "WARNING"]
            if self.faults:
                argv += ["--faults", self.faults]
            host.process = await asyncio.create_subprocess_exec(
                *argv,
                env={**os.environ, "GATEMESH_BROKER": url},  # not in argv: a password there is in every `ps`
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            host.state = "running"
            self.on_change()

    async def start_all(self, online: Callable[[str, int], Coroutine[Any, Any, None]] | None = None) -> None:
        """Start every host, one after the other: each online (when `online` can tell) before the next
        starts (the embedded broker can confuse hosts that announce themselves at the same moment).
        A host whose process ends first (killed from the page as it started) is not waited for."""
        for name in self.hosts:
            await self.start(name)
            process = self.hosts[name].process
            online = online or self.online
            if online is not None and process is not None:
                async with asyncio.TaskGroup() as group:
                    announced = group.create_task(online(name, process.pid))
                    ended = group.create_task(process.wait())
                    await asyncio.wait({announced, ended}, return_when=asyncio.FIRST_COMPLETED)
                    announced.cancel()
                    ended.cancel()

    def kill(self, name: str) -> None:
        host = self.hosts[name]
        if host.process is None or host.process.returncode is not None:
            raise ValueError(f"host {name} is not running")
        host.process.send_signal(signal.SIGKILL)
        host.state = "killed"
        self.on_change()

    async def restart_all(self, faults: str) -> None:
        """Stop every host and start them again with these faults (new incarnations: redeploy after)."""
        self.faults, self.started_with = faults, None
        await self.stop_all()
        await self.start_all()
        self.started_with = faults

    async def stop_all(self) -> None:
        for host in self.hosts.values():
            process = host.process
            if process is None or process.returncode is not None:
                continue
            host.state = "stopping"
            self.on_change()
            process.terminate()
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
            host.state = "exited"
            self.on_change()

    def poll(self) -> None:
        """Notice processes that ended by themselves."""
        for host in self.hosts.values():
            ended = host.process is not None and host.process.returncode is not None
            if ended and host.state in ("running", "stopping"):
                assert host.process is not None
                host.state = f"exited ({host.process.returncode})"
                self.on_change()

    def view(self) -> list[dict[str, object]]:
        self.poll()
        return [
            {"name": h.name, "state": h.state, "pid": h.process.pid if h.process else None} for h in self.hosts.values()
        ]


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the server dies, however it dies (Linux's
    PR_SET_PDEATHSIG), so that no host the server started outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def broker_url_for(broker: BrokerAddress, accounts: SecureDir, host: str) -> str:
    """`broker` as host `host` reaches it: with its own account (and the CA of an mqtts:// broker)."""
    user = host_user(host)
    password = quote(accounts.credentials()[user], safe="")
    ca = f"?ca={quote(str(broker.ca_file), safe='/')}" if broker.ca_file else ""
    return f"{'mqtts' if broker.tls else 'mqtt'}://{user}:{password}@{broker.host}:{broker.port}{ca}"


class ClusterWatch:
    """Every host's presence and every deployment's record, live (retained messages, subscribed)."""

    def __init__(self, broker: BrokerAddress, on_change: Callable[[], None]) -> None:
        self.broker = broker
        self.on_change = on_change
        self.hosts: dict[str, HostPresence] = {}
        self.deployments: dict[str, DeploymentHead] = {}
        """Each deployment's head (orchestrator/records.py): what it is, without its gates."""
        self.error = ""
        self._changed = asyncio.Event()

    async def serve(self) -> NoReturn:
        backoff = Backoff()
        while True:
            try:
                async with connect(self.broker) as mqtt:
                    self.hosts.clear()  # the broker sends every retained presence and record again
                    self.deployments.clear()  # (one removed while disconnected is not among them)
                    await subscribe_all(mqtt, [host_topic("+"), deployment_topic("+")])
                    self.error = ""
                    self.on_change()
                    backoff.reset()
                    async for name, payload in incoming(mqtt):
                        self._on_message(name, payload)
            except TransportError as exc:
                self.error = f"cannot watch the cluster on {self.broker}: {exc}"
                self.on_change()
                await asyncio.sleep(backoff.next())

    async def wait_online(self, name: str, pid: int, timeout: float = 20.0) -> None:
        """Return once host `name` in process `pid` has announced itself online (or after `timeout`)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not ((p := self.hosts.get(name)) is not None and p.state == "online" and p.pid == pid):
                    self._changed.clear()
                    await self._changed.wait()

    def _on_message(self, name: str, payload: bytes) -> None:
        key = last_level(name)
        with contextlib.suppress(ValidationError):
            if name.startswith(host_topic("")):
                if payload:
                    self.hosts[key] = HostPresence.model_validate_json(payload)
                else:
                    self.hosts.pop(key, None)
            elif payload:
                record = RETAINED_RECORD.validate_json(payload)  # a head, or an older whole record
                self.deployments[key] = record if isinstance(record, DeploymentHead) else head_of(record)
            else:
                self.deployments.pop(key, None)
        self._changed.set()
        self.on_change()

    def view(self) -> dict[str, object]:
        """The hosts and the live deployments (not those made for one run: a page's on its hosts,
        `gatemesh run --hosts`)."""
        deployments = []
        for name, record in sorted(self.deployments.items()):
            if record.transient:
                continue
            lost = [
                h
                for h, inc in record.hosts.items()
                if (p := self.hosts.get(h)) is None or p.state != "online" or p.incarnation != inc
            ]
            deployments.append(
                {
                    "name": name,
                    "gates": record.gates,
                    "hosts": sorted(record.hosts),
                    "inputs": list(record.inputs) if isinstance(record.inputs, tuple) else [],
                    "input_count": record.input_count,
                    "state": "broken: host(s) " + ", ".join(lost) + " gone" if lost else "ready",
                }
            )
        hosts = [
            {"name": name, "state": p.state + (f" ({p.reason})" if p.reason else ""), "pid": p.pid}
            for name, p in sorted(self.hosts.items())
        ]
        return {"hosts": hosts, "deployments": deployments, "error": self.error}
