"""The parent's side of the worker: start it, send requests, wait for answers with a deadline.

The parent (the ``kvaudit`` CLI) never imports torch; the worker does, once. The worker runs in a
session of its own (a Ctrl-C in the terminal reaches kvaudit, which then stops the worker), and
:meth:`WorkerClient.close` leaves nothing of it behind: the worker kills everything below it
when it exits or gets SIGTERM, and whatever is left of its session is killed here.
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

from ..worker.process import kill_all, session_members
from ..options import PARENT_ENV

# The worker's own start-up (imports, model) may take this long on a slow machine.
INIT_TIMEOUT_S = 180.0
# Slack on top of a request's own timeout (the worker enforces that one on its children).
REPLY_SLACK_S = 30.0
# How long a worker asked to stop may take to clean up before it is killed.
STOP_GRACE_S = 5.0


class WorkerError(RuntimeError):
    """The worker died, hung, or answered nonsense; ``str()`` is one line."""


class WorkerClient:
    """One worker subprocess and its line-based JSON protocol."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["HF_HUB_OFFLINE"] = "1"
        child_env[PARENT_ENV] = str(os.getpid())  # the worker stops when this process dies
        # stderr goes to a file: a chatty press cannot fill a pipe and block, and the tail explains a death.
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            # -P: the working directory is not put first on the worker's sys.path (see worker.py).
            [sys.executable, "-P", "-m", "kvaudit.tracer.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env,
            start_new_session=True,
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

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self, kill: bool = False) -> None:
        """Stop the worker and everything it started.

        Without ``kill``, its stdin is closed and it exits once the current request is done; with
        ``kill``, it gets SIGTERM and stops at once. Either way it kills and reaps every process
        below it first; if it does not exit within :data:`STOP_GRACE_S`, it is killed, and so is
        every process left in its session.
        """
        process = self._process
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.close()
            except OSError:
                pass
            if kill:
                process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S if kill else 2 * STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
        # What stayed in the worker's session (the worker was killed, or a press killed it).
        kill_all([pid for pid in session_members(process.pid) if pid != process.pid])
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()
