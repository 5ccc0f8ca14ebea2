"""Start a broker for gatemesh: a Mosquitto process or the embedded amqtt broker.

Both bind to loopback on a free port by default and hand back an `mqtt://` URL, so tests,
the CLI and the benchmarks never fight over port 1883.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from broker import security, subscriptions

MOSQUITTO_CONF = Path(__file__).with_name("mosquitto.conf")
RELOAD_POLL = 0.05


class BrokerStartError(RuntimeError):
    """A broker could not be started; the message says why and what it printed."""


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key for Mosquitto's listener, and the CA that signed them."""

    ca: Path
    cert: Path
    key: Path

    def config_lines(self) -> list[str]:
        return [f"cafile {self.ca}", f"certfile {self.cert}", f"keyfile {self.key}"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_until_listening(process: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> bool:
    """True once a freshly started broker process accepts connections; False if it died or timed
    out. Only while it lives: what accepts on its port after it died is something else."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if accepts(host, port):
            return process.poll() is None
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return False


def mosquitto_config(
    port: int, data_dir: Path, host: str = "127.0.0.1", base: Path = MOSQUITTO_CONF, extra: Sequence[str] = ()
) -> str:
    """The project's Mosquitto config with its listener moved to host:port, its data in data_dir,
    and `extra` lines replacing the base file's lines of the same option."""
    ours = [f"listener {port} {host}", f"persistence_location {data_dir}/", *extra]
    replaced = tuple(line.split()[0] + " " for line in ours)
    lines = [line for line in base.read_text().splitlines() if not line.startswith(replaced)]
    return "\n".join([*ours, *lines, ""])


class MosquittoOptions(TypedDict, total=False):
    """What a Mosquitto is started with besides its address (see `mosquitto_process`)."""

    data_dir: Path | None
    secure_dir: Path | None
    tls: TlsFiles | None
    extra: Sequence[str]


@contextlib.contextmanager
def mosquitto(
    port: int | None = None, host: str = "127.0.0.1", timeout: float = 10.0, **options: Unpack[MosquittoOptions]
) -> Iterator[str]:
    """`mosquitto_process`'s URL: a Mosquitto for the duration of the block."""
    with mosquitto_process(port, host, timeout, **options) as (url, _):
        yield url


@contextlib.contextmanager
def mosquitto_process(
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    *,
    data_dir: Path | None = None,
    secure_dir: Path | None = None,
    tls: TlsFiles | None = None,
    extra: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run a Mosquitto process for the duration of the block; yields its URL and the process.

    Its retained messages are saved in `data_dir` when it stops: a second block with the same
    port and data_dir is the same broker restarted. Without data_dir, a temporary one is used.
    Started as root, Mosquitto runs as its own user: every parent of data_dir must let it in.

    With `secure_dir` (see broker/security.py) anonymous clients are refused, the directory's
    passwd and acl apply, and the broker reloads them (SIGHUP) whenever the acl file changes.
    With `tls` the listener speaks only TLS, and the URL is `mqtts://...?ca=<the CA file>`.
    """
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        raise BrokerStartError("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if port and accepts(host, port):  # Debian's package starts a system Mosquitto on 1883
        raise BrokerStartError(f"{host}:{port} is taken: something listens there already (a system Mosquitto?)")
    if data_dir is not None and (closed := _closed_to_others(data_dir)) is not None:
        raise BrokerStartError(
            f"data directory {data_dir}: started as root, Mosquitto runs as its own user, which cannot enter "
            f"{closed} (mode {closed.stat().st_mode & 0o777:o}): it would save nothing; choose a directory "
            "whose parents others may enter (a new one under /var/lib or /tmp, say)"
        )
    port = port or free_port(host)
    with tempfile.TemporaryDirectory(prefix="gatemesh-mosquitto-") as workdir:
        conf = Path(workdir, "mosquitto.conf")
        data = data_dir or Path(workdir)
        if os.geteuid() == 0:  # started as root, Mosquitto drops to its own user before it saves
            _open_to_mosquitto(data, ours=data_dir is None)
        lines = [*(tls.config_lines() if tls else [])]
        lines += [*(security.config_lines(secure_dir) if secure_dir else []), *extra]
        conf.write_text(mosquitto_config(port, data, host, extra=lines))
        log_path = Path(workdir, "mosquitto.log")
        with log_path.open("wb") as log_file:
            process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
            try:
                if not wait_until_listening(process, host, port, timeout):
                    raise BrokerStartError(
                        f"mosquitto did not start on {host}:{port}: {log_path.read_text(errors='replace')}"
                    )
                stop_watching = threading.Event()
                if secure_dir is not None:
                    watcher = threading.Thread(
                        target=_reload_on_change, args=(process, secure_dir / "acl", stop_watching), daemon=True
                    )
                    watcher.start()
                try:
                    yield (f"mqtts://{host}:{port}?ca={tls.ca}" if tls else f"mqtt://{host}:{port}"), process
                finally:
                    stop_watching.set()
            finally:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _open_to_mosquitto(data: Path, *, ours: bool) -> None:
    """Let Mosquitto's own user write `data`: a directory of the block's own is opened to all; a
    user's is given to that user alone (not made world-writable: it holds the deployments)."""
    if ours:
        data.chmod(0o777)
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:  # no such user: Mosquitto stays root, and may write it as it is
        return
    os.chown(data, user.pw_uid, user.pw_gid)
    data.chmod(0o700)


def _closed_to_others(directory: Path) -> Path | None:
    """The first parent of `directory` that Mosquitto, started as root and then running as its own
    user, may not enter (None if it may enter them all, or if it runs as whoever started it)."""
    if os.geteuid() != 0:
        return None
    return next((p for p in directory.resolve().parents if not p.stat().st_mode & stat.S_IXOTH), None)


def _reload_on_change(process: subprocess.Popen[bytes], watched: Path, stop: threading.Event) -> None:
    """SIGHUP the broker whenever `watched` changes, so that a new ACL applies at once."""
    last = watched.stat().st_mtime_ns if watched.exists() else 0
    while not stop.wait(RELOAD_POLL):
        current = watched.stat().st_mtime_ns if watched.exists() else 0
        if current != last and process.poll() is None:
            last = current
            process.send_signal(signal.SIGHUP)


def _amqtt_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@contextlib.asynccontextmanager
async def embedded(port: int = 0, host: str = "127.0.0.1", *, mended: bool = True) -> AsyncIterator[str]:
    """Run the amqtt broker inside this event loop (MQTT 3.1.1); yields its URL.

    `mended`: with broker/subscriptions.py's mends (False: amqtt as it is, for bench/embedded.py)."""
    from amqtt.broker import Broker  # imported here: only the embedded path pays for it

    for name in ("amqtt", "transitions"):  # its warnings are its own bookkeeping (a PUBACK it lost track of
        logging.getLogger(name).setLevel(logging.ERROR)  # under dup=1), which a learner takes for a failure
    broker = Broker(_amqtt_config(host, port))
    if mended:
        try:
            subscriptions.adapt(broker)
        except RuntimeError as exc:  # another amqtt than the one pinned
            raise BrokerStartError(str(exc)) from exc
    try:
        await broker.start()
    except Exception as exc:
        raise BrokerStartError(f"the embedded broker could not listen on {host}:{port}: {exc}") from exc
    try:
        # amqtt has no public accessor for the bound port; port 0 needs it read back
        bound = broker._servers["default"].instance.sockets[0].getsockname()[1]
        yield f"mqtt://{host}:{bound}"
    finally:
        await broker.shutdown()


async def serve_embedded(port: int, host: str = "127.0.0.1") -> None:
    """Run the embedded broker until cancelled (the `python -m broker embedded` command)."""
    async with embedded(port, host) as url:
        print(url, flush=True)
        await asyncio.Event().wait()
