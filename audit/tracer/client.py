"""The parent's side of the worker: start it, send requests, wait for answers with a deadline.

The parent (the ``kvaudit`` CLI) never imports torch; the worker does, once.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Any


# The worker's own start-up (imports, model) may take this long on a slow machine.
INIT_TIMEOUT_S = 180.0
# Slack on top of a request's own timeout (the worker enforces that one on its children).
REPLY_SLACK_S = 30.0


class WorkerError(RuntimeError):
    """The worker died, hung, or answered nonsense; ``str()`` is one line."""


class WorkerClient:
    """One worker subprocess and its line-based JSON protocol."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["HF_HUB_OFFLINE"] = "1"
        # stderr goes to a file: a chatty press cannot fill a pipe and block, and the tail explains a death.
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kvaudit.tracer.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env,
        )
        self._buffer = b""

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and return its answer, or raise :class:`WorkerError`."""
        if not self.alive:
            raise WorkerError(f"trace worker exited: {self.stderr_tail()}")
        assert self._process.stdin is not None
        try:
            self._process.stdin.write((json.dumps(payload) + "\n").encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"trace worker exited: {self.stderr_tail()}") from None
        line = self._read_line(timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise WorkerError(f"trace worker answered garbage: {line[:80]!r}") from None

    def _read_line(self, timeout: float) -> str:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                self.close(kill=True)
                raise WorkerError(f"trace worker gave no answer within {timeout:g} s; killed")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerError(f"trace worker exited: {self.stderr_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def stderr_tail(self) -> str:
        """The worker's last non-empty stderr line (why it died), or a placeholder."""
        if self._stderr.closed:
            return "no message"
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no message"

    def close(self, kill: bool = False) -> None:
        """Stop the worker: close its stdin (it exits), or kill it."""
        if self._process.poll() is None:
            if kill:
                self._process.kill()
            else:
                try:
                    assert self._process.stdin is not None
                    self._process.stdin.close()
                except OSError:
                    pass
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()
