"""The parent's side of the worker: start it, send requests, wait for answers with a deadline.

The parent (the ``kvaudit`` CLI) never imports torch; the worker does, once. The worker runs in a
session of its own (a Ctrl-C in the terminal reaches kvaudit, which then stops the worker), and
:meth:`WorkerClient.close` leaves nothing of it behind: the worker kills everything below it
when it exits or gets SIGTERM, and whatever is left of its session is killed here.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import TypeVar

from ... import codec
from ..options import PARENT_ENV
from ..wire import Request
from ..worker.process import kill_all, session_members

R = TypeVar("R")

# The worker's own start-up (imports, model) may take this long on a slow machine.
INIT_TIMEOUT_S = 180.0
# Slack on top of a request's own timeout (the worker enforces that one on its children).
REPLY_SLACK_S = 30.0
# How long a worker asked to stop may take to clean up before it is killed.
STOP_GRACE_S = 5.0
# What is kept of the worker's stderr (where the user's code prints): its tail explains a death.
STDERR_TAIL_BYTES = 64 << 10
# What a message may quote of that tail: its last line, cut.
QUOTE_WIDTH = 200


class WorkerError(RuntimeError):
    """The worker died, hung, or answered nonsense; ``str()`` is one line."""


class StderrTail:
    """Drain a pipe in a thread and keep only its last :data:`STDERR_TAIL_BYTES`.

    A press that writes gigabytes to stderr costs kvaudit neither memory nor disk, and can never
    block on a full pipe.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="kvaudit-worker-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._fd], [], [], 0.2)[0]:
                continue
            try:
                chunk = os.read(self._fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._data += chunk
                if len(self._data) > 2 * STDERR_TAIL_BYTES:
                    del self._data[:-STDERR_TAIL_BYTES]

    def last_line(self) -> str:
        """The last non-empty line kept, on one line and cut to :data:`QUOTE_WIDTH` characters ("" if none)."""
        from ...source import one_line

        with self._lock:
            text = bytes(self._data[-STDERR_TAIL_BYTES:]).decode(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return one_line(lines[-1], QUOTE_WIDTH) if lines else ""

    def settle(self, timeout: float = 0.5) -> None:
        """Let the drain read what a process that has exited left in the pipe (up to its end, or
        ``timeout`` when a child the process started still holds the pipe open)."""
        self._thread.join(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


class WorkerClient:
    """One worker subprocess and its line-based JSON protocol."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["HF_HUB_OFFLINE"] = "1"
        child_env[PARENT_ENV] = str(os.getpid())  # the worker stops when this process dies
        self._process = subprocess.Popen(
            # -P: the working directory is not put first on the worker's sys.path (see worker.py).
            [sys.executable, "-P", "-m", "kvaudit.tracer.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            start_new_session=True,
        )
        assert self._process.stderr is not None
        # Drained at once, its tail kept: a chatty press can neither block on a full pipe nor fill memory or disk.
        self._stderr = StderrTail(self._process.stderr.fileno())
        self._buffer = b""

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def request(self, payload: Request, reply_type: type[R], timeout: float) -> R:
        """Send one request and return its answer, or raise :class:`WorkerError`."""
        if not self.alive:
            raise WorkerError(self.death())
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(codec.encode(payload) + b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self.death()) from None
        line = self._read_line(timeout)
        try:
            return codec.decode(line, reply_type)
        except codec.CodecError:
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
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:  # closed under us (close() from another thread, on Ctrl-C)
                chunk = b""
            if not chunk:
                raise WorkerError(self.death())
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def death(self, wait: float = 2.0) -> str:
        """Why the worker stopped answering, in one line: its exit status, then its last stderr line, cut.

        The worker closed its stdout: it is exiting, so its status is waited for a moment.
        """
        try:
            code = self._process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            how = "trace worker closed its output but is still running"
        else:
            if code < 0:
                try:
                    how = f"trace worker exited: killed by {signal.Signals(-code).name}"
                except ValueError:
                    how = f"trace worker exited: killed by signal {-code}"
            else:
                how = f"trace worker exited with status {code}"
            self._stderr.settle()  # its last words may still be in the pipe
        last = self._stderr.last_line()
        return f"{how}; its last line on stderr: {last}" if last else how

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
        self._stderr.close()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass
