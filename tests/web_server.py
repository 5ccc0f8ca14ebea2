"""`gatemesh serve` as a process for the browser tests, and Chromium as Playwright drives it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.processes import clean_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("GATEMESH_SCREENSHOTS", Path(tempfile.gettempdir()) / "gatemesh-screenshots"))
"""Where the browser tests leave their screenshots (look at them)."""


class ServeProcess:
    """`gatemesh serve --port 0 ARGS`, with the URL it prints."""

    def __init__(self, *args: str, timeout: float = 60) -> None:
        command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "serve", "--port", "0", *args]
        # a file, not a pipe: the hosts it starts share it, and may outlive a pipe's reader
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.errors, text=True, env=clean_env())
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.url = ""
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise TimeoutError(f"gatemesh serve printed no URL within {timeout} s") from None
            if line is None:
                raise RuntimeError(f"gatemesh serve exited: {self.stop()}")
            if match := re.search(r"open (http://\S+/)", line):
                self.url = match.group(1)
                break

    def stop(self) -> str:
        """Stop it as a service manager does (SIGTERM: a background job may ignore SIGINT); its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.errors.seek(0)
        text = self.errors.read()
        self.errors.close()
        return text
