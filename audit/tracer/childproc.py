"""Run a function in a forked child with a timeout: isolation for the user's press code.

The worker forks after torch, transformers and kvpress are imported and the model is built, so a
child starts in milliseconds and shares the model copy-on-write. A child that hangs is killed
with its whole process group; one that dies (segfault, ``os._exit``) is reported as such.

Why fork is safe here: the worker runs torch with one intra-op thread and never enters a
parallel region before forking (GNU OpenMP is not fork-safe once its pool exists).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OK, FAILED, TIMEOUT, DIED = "ok", "failed", "timeout", "died"


class ReportedError(Exception):
    """An error whose message is reported as is (no exception type in front)."""


@dataclass(frozen=True)
class ChildOutcome:
    """How a child ended: ``ok`` with its payload, ``failed`` (raised), ``timeout`` or ``died``."""

    status: str
    payload: Any = None
    detail: str = ""
    seconds: float = 0.0
    error_type: str | None = None  # the exception's class name when ``failed``


def _child_main(function: Callable[[], Any], write_fd: int) -> None:
    os.setpgid(0, 0)  # own process group: a timeout kills whatever the press started too
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the user's code must never read the worker's request stream
        data = json.dumps({"ok": True, "payload": function()}).encode()
    except BaseException as error:  # noqa: BLE001 - everything must reach the worker as one line
        if isinstance(error, ReportedError):
            last = str(error)
        else:
            last = traceback.format_exception_only(type(error), error)[-1].strip()
        data = json.dumps({"ok": False, "error": " ".join(last.split()), "type": type(error).__name__}).encode()
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(data)


def run_in_child(function: Callable[[], Any], timeout: float) -> ChildOutcome:
    """Fork, run ``function`` in the child, return its JSON-safe result within ``timeout`` seconds."""
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            _child_main(function, write_fd)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)  # skip the worker's atexit handlers and buffered streams

    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # also here: a kill may come before the child ran its own setpgid
    except OSError:
        pass
    chunks: list[bytes] = []
    deadline = started + timeout
    timed_out = False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], remaining)
            if not ready:
                timed_out = True
                break
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        _kill_group(pid)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - started
    if timed_out:
        return ChildOutcome(TIMEOUT, detail=f"no result after {timeout:g} s; killed", seconds=seconds)
    try:
        message = json.loads(b"".join(chunks).decode())
    except ValueError:
        return ChildOutcome(DIED, detail=_death(status), seconds=seconds)
    if message.get("ok"):
        return ChildOutcome(OK, payload=message.get("payload"), seconds=seconds)
    return ChildOutcome(
        FAILED, detail=message.get("error", "unknown error"), seconds=seconds, error_type=message.get("type")
    )


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
            return
        except (ProcessLookupError, PermissionError):
            continue


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"the process died: {signal.Signals(os.WTERMSIG(status)).name}"
    return f"the process exited with status {os.waitstatus_to_exitcode(status)} before reporting"
