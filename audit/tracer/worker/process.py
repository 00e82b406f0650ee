"""Run a function in a forked child with a timeout, and clean up after it: isolation for press code.

The worker forks after torch, transformers and kvpress are imported and the model is built, so a
child starts in milliseconds and shares the model copy-on-write.

What a hostile press can do, and what stops it:

* **It starts processes.** The child runs in its own process group; on every exit (a result, a
  timeout, a death) the group is killed *before* the child is reaped, so the group id cannot have
  been reused. A process that left the group (``setsid``, double fork) is caught too: the worker
  is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so every orphan of the press is re-parented to
  it, and :func:`kill_descendants` kills and reaps everything below the worker after each child.
* **A grandchild keeps the result pipe open.** The result is framed (an 8-byte length, then JSON);
  reading stops when the frame is complete, never waiting for end-of-file.
* **It kills the worker or kvaudit.** The child dies with the worker (``PR_SET_PDEATHSIG``), and
  the worker with kvaudit (see :func:`guard_parent`; the worker also polls its parent while it waits).
* **It eats memory.** ``RLIMIT_AS`` caps the child's address space at what it had at the fork plus
  ``memory_limit`` bytes: past it, a single allocation fails in the child at once (a crash of the
  press), not the machine. The cap is per process, so the worker also polls the memory of the whole
  tree below it (:mod:`kvaudit.tracer.worker.memory`) and kills the child's group past the limit.
* **It runs too long, or hangs.** The worker measures the CPU time of the press's processes against
  ``--timeout``, stops a press that makes no progress (a sleep, a deadlock) after as long in wall
  time, and any press at a wall-clock ceiling (:mod:`kvaudit.tracer.worker.clock`): a busy machine
  slows a press down without making it time out.

Why fork is safe here: the worker runs torch with one intra-op thread and never enters a
parallel region before forking (GNU OpenMP is not fork-safe once its pool exists).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MESSAGE_WIDTH, ReportedError

if TYPE_CHECKING:
    from .clock import PressClock

OK, FAILED, TIMEOUT, DIED, MEMORY = "ok", "failed", "timeout", "died", "memory"

_FRAME = struct.Struct(">Q")  # the length of the JSON result that follows
_MAX_RESULT_BYTES = 1 << 30  # a longer "frame" is garbage written by the press, not a result
_MAX_TRACEBACK = 20_000  # what --debug may print of a traceback (its end: the raising frame)
PARENT_POLL_S = 0.5  # how often a waiting worker checks its parent and the press's time (clock.py)
MEMORY_POLL_S = 0.1  # how often it measures the press's processes, under --memory-limit

# Descriptors of the worker that a child must not hold (the worker's reply stream): closed after the fork,
# so that press code can neither write into the protocol nor keep it open after the worker died.
private_fds: list[int] = []

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ChildOutcome:
    """How a child ended: ``ok`` with its payload, ``failed`` (raised), ``timeout`` or ``died``."""

    status: str
    payload: Any = None
    detail: str = ""
    seconds: float = 0.0
    error_type: str | None = None  # the exception's class name when ``failed``
    traceback: str | None = None  # when ``failed`` with an exception that is not a ReportedError


# ---------------------------------------------------------------------------------------------
# Process bookkeeping: prctl, the process table, killing and reaping
# ---------------------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)`` through libc; False where there is no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it instead of to PID 1."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int, parent: int) -> bool:
    """Ask the kernel for ``sig`` when ``parent`` dies; send it now if it is already gone."""
    armed = _prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # it died before the request was armed
        os.kill(os.getpid(), sig)
    return armed


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (zombies too), from one snapshot of the process table."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(root).children(recursive=True)]
    except psutil.Error:  # root itself is gone
        return []


def below(root: int) -> list[int]:
    """Every process below ``root``: through ``/proc/PID/task/*/children`` where the kernel has it.

    Cheap enough to call ten times a second while a press runs (it reads the tree, not the whole
    process table); :func:`descendants` where the kernel lacks those files.
    """
    if not os.path.isdir(f"/proc/{root}/task"):
        return descendants(root)
    found: list[int] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", "rb") as handle:
                    kids = [int(k) for k in handle.read().split()]
            except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: read the whole table
                return descendants(root)
            except (OSError, ValueError):
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


def session_members(session: int) -> list[int]:
    """Every process of session ``session``."""
    import psutil

    members = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == session:
                members.append(pid)
        except OSError:  # it exited meanwhile
            continue
    return members


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # gone already, or not ours
            pass


def kill_descendants(rounds: int = 200) -> None:
    """Kill and reap every process below this one.

    Killing a process re-parents its own children to this process (a subreaper), so the table is
    read again until nothing is left; each round also reaps the processes that are our children.
    """
    import psutil

    me = psutil.Process()
    for _ in range(rounds):
        found = descendants(me.pid)
        if not found:
            break
        kill_all(found)
        try:
            ours = {child.pid for child in me.children()}
        except psutil.Error:
            ours = set()
        for pid in found:
            if pid in ours:  # killed above: waiting for it cannot block
                _reap(pid)
    reap_orphans()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def reap_orphans() -> None:
    """Reap every child that has already exited (orphans re-parented to a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------------------------------------------
# The worker's parent
# ---------------------------------------------------------------------------------------------

_watched_parent: int | None = None


def guard_parent(parent: int) -> None:
    """Make this process (the worker) stop at once when ``parent`` (kvaudit) dies.

    The kernel sends SIGTERM (``PR_SET_PDEATHSIG``); the handler kills every descendant and
    exits. :func:`run_in_child` also polls the parent while it waits, where prctl is missing.
    """
    global _watched_parent
    _watched_parent = parent
    signal.signal(signal.SIGTERM, _stop_now)
    die_with_parent(signal.SIGTERM, parent)


def _stop_now(signum: int = signal.SIGTERM, frame: Any = None) -> None:
    kill_descendants()
    os._exit(128 + signum)


def _parent_gone() -> bool:
    return _watched_parent is not None and os.getppid() != _watched_parent


# ---------------------------------------------------------------------------------------------
# One child
# ---------------------------------------------------------------------------------------------


def _address_space() -> int:
    """This process's current virtual memory size in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit_memory(extra: int) -> None:
    """Cap the address space at its size now plus ``extra`` bytes (soft and hard: the press cannot lift it)."""
    import resource

    cap = _address_space() + extra
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _child_main(function: Callable[[], Any], write_fd: int, worker: int, memory_limit: int | None) -> None:
    os.setpgid(0, 0)  # own process group: whatever the press starts there dies with it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the worker's clean-up handler is not the child's
    die_with_parent(signal.SIGKILL, worker)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the user's code must never read the worker's request stream
    os.close(null)
    for fd in private_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        if memory_limit:
            _limit_memory(memory_limit)
        data = json.dumps({"ok": True, "payload": function()}).encode()
    except BaseException as error:  # noqa: BLE001 - everything must reach the worker as one line
        from ...source import one_line

        reported = isinstance(error, ReportedError)
        try:
            last = str(error) if reported else traceback.format_exception_only(type(error), error)[-1].strip()
        except BaseException:  # noqa: BLE001 - the user's __str__ may raise too
            last = f"{type(error).__name__}: <str() raised>"
        message = {"ok": False, "error": one_line(last, MESSAGE_WIDTH), "type": type(error).__name__}
        if not reported:
            message["traceback"] = traceback.format_exc()[-_MAX_TRACEBACK:]
        data = json.dumps(message).encode()
    _write_all(write_fd, _FRAME.pack(len(data)) + data)
    os.close(write_fd)


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _read_frame(read_fd: int, pid: int, clock: PressClock,
                over_limit: Callable[[], str | None] | None = None) -> tuple[bytes | None, tuple[str, str] | None]:
    """Read the child's framed result; returns (the JSON bytes, or None if it ended without one; why it was stopped).

    Why it was stopped: (``TIMEOUT``, the clock's reason) or (``MEMORY``, ``over_limit``'s reason), both
    polled while waiting; None when it was not. Never waits for end-of-file: a grandchild may hold the
    pipe open long after the child is done.
    """
    buffer = bytearray()
    needed: int | None = None
    child_done = False
    poll = min(PARENT_POLL_S, MEMORY_POLL_S) if over_limit is not None else PARENT_POLL_S
    while True:
        now = time.perf_counter()
        remaining = clock.deadline - now
        if remaining <= 0:
            return None, (TIMEOUT, clock.check(now) or clock.ceiling_reached(now))
        ready, _, _ = select.select([read_fd], [], [], 0 if child_done else min(remaining, poll))
        if not ready:
            if child_done:  # it exited, the pipe is drained, and the frame is incomplete
                return None, None
            if _parent_gone():
                _stop_now()
            reason = over_limit() if over_limit is not None else None
            if reason is not None:
                return None, (MEMORY, reason)
            reason = clock.check(time.perf_counter())
            if reason is not None:
                return None, (TIMEOUT, reason)
            child_done = _exited(pid)
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            return None, None  # the child (and every copy of the pipe) closed it without a result
        buffer += chunk
        if needed is None and len(buffer) >= _FRAME.size:
            needed = _FRAME.unpack_from(buffer)[0]
            if needed > _MAX_RESULT_BYTES:
                return None, None
        if needed is not None and len(buffer) >= _FRAME.size + needed:
            return bytes(buffer[_FRAME.size : _FRAME.size + needed]), None


def run_in_child(function: Callable[[], Any], timeout: float, memory_limit: int | None = None) -> ChildOutcome:
    """Fork, run ``function`` in the child, return its JSON-safe result.

    ``timeout`` is CPU seconds of the child and every process it starts, together; an idle child
    (a hang) is stopped after ``timeout`` seconds of wall time, and any child at the wall-clock ceiling
    (:mod:`kvaudit.tracer.worker.clock`). Whatever happens, the child's process group and every
    process left below this one are killed and reaped before this returns. ``memory_limit`` (bytes)
    caps what the child, and every process it starts, may hold together (``RLIMIT_AS`` per process,
    and the worker's polls of the whole tree).
    """
    from .clock import PressClock
    from .memory import watch

    over_limit = watch(memory_limit) if memory_limit else None  # the worker's own memory, before the fork
    read_fd, write_fd = os.pipe()
    worker = os.getpid()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            _child_main(function, write_fd, worker, memory_limit)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)  # skip the worker's atexit handlers and buffered streams

    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # also here: a kill may come before the child ran its own setpgid
    except OSError:
        pass
    data: bytes | None = None
    stopped: tuple[str, str] | None = None
    try:
        data, stopped = _read_frame(read_fd, pid, PressClock(timeout, worker, started), over_limit)
    finally:
        os.close(read_fd)
        _kill_group(pid)  # before reaping: an unreaped child keeps its group id from being reused
        _, status = os.waitpid(pid, 0)
        kill_descendants()  # whatever left the group: orphans re-parented to this subreaper
    seconds = time.perf_counter() - started
    if stopped is not None:
        return ChildOutcome(stopped[0], detail=stopped[1], seconds=seconds)
    try:
        message = json.loads(data.decode()) if data is not None else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return ChildOutcome(DIED, detail=_death(status), seconds=seconds)
    if message.get("ok"):
        return ChildOutcome(OK, payload=message.get("payload"), seconds=seconds)
    return ChildOutcome(
        FAILED, detail=message.get("error", "unknown error"), seconds=seconds, error_type=message.get("type"),
        traceback=message.get("traceback"),
    )


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            continue


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"the process died: {signal.Signals(os.WTERMSIG(status)).name}"
    return f"the process exited with status {os.waitstatus_to_exitcode(status)} before reporting"
