"""The tracer's process hygiene (issue 9 §5): hostile press code leaves nothing running behind it.

Each hostile module is written at test time and records the PIDs it starts in a file. The checks
read /proc: a process is gone when it no longer exists or is only a zombie. Most cases run on the
suite's shared worker (a fork per case, milliseconds); the parent-death cases start a small parent
process that drives a bare worker (no torch: ``list`` needs none), so that the parent can die.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kvaudit.tracer import TraceOptions
from kvaudit.tracer.parent.client import WorkerClient, WorkerError
from kvaudit.tracer.wire import ListReply, ListRequest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def survivors(pids: list[int], within: float = 10.0) -> list[int]:
    """The PIDs still running after up to ``within`` seconds (a hang guard, not a timing)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:  # never leave the machine littered, even when the test fails
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def read_pids(path: Path, count: int, within: float = 20.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().split()
            if len(lines) >= count:
                return [int(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"the hostile module wrote no PIDs to {path}")


# Appends a PID to the file, then waits until the file holds `count` PIDs (the module goes on only
# once every process it started has said who it is).
PROLOGUE = '''
import os, subprocess, sys, time
PIDS = {pids!r}

def note(pid):
    with open(PIDS, "a") as handle:
        handle.write(f"{{pid}}\\n")

def wait_for(count):
    while not os.path.exists(PIDS) or len(open(PIDS).read().split()) < count:
        time.sleep(0.01)
'''

HOSTILE = {
    # a child in the press's own process group, still running when the press returns
    "child-in-group": "note(subprocess.Popen(SLEEPER).pid)",
    # a child in a new session, still running when the press returns
    "child-in-new-session": "note(subprocess.Popen(SLEEPER, start_new_session=True).pid)",
    # a classic daemon: fork, setsid, fork again, close every inherited descriptor
    "setsid-daemon": textwrap.dedent('''
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(3, 65536)
                note(os.getpid())
                time.sleep(120)
            os._exit(0)
        os.waitpid(first, 0)
        wait_for(1)
    '''),
}


def hostile_module(folder: Path, name: str, body: str) -> tuple[Path, Path]:
    pids = folder / f"{name}.pids"
    source = PROLOGUE.format(pids=str(pids)) + f"SLEEPER = {SLEEPER!r}\n" + textwrap.dedent(body) + "\n\nclass Helper:\n    pass\n"
    path = folder / f"{name.replace('-', '_')}.py"
    path.write_text(source)
    return path, pids


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_processes_a_press_starts_die_when_it_returns(case: str, tmp_path: Path, shared_worker) -> None:
    path, pids = hostile_module(tmp_path, case, HOSTILE[case])
    shared_worker.use(TraceOptions(timeout=30))
    listed = shared_worker.list_classes(str(path), str(path), None)
    assert [c.name for c in listed.classes] == ["Helper"]
    started = read_pids(pids, 1)
    assert survivors(started) == [], f"{case}: still running after the press returned"


def test_a_grandchild_holding_the_result_pipe_does_not_turn_a_result_into_a_timeout(tmp_path: Path, shared_worker) -> None:
    # The grandchild inherits every descriptor of the child, the result pipe included, and sleeps.
    path, pids = hostile_module(tmp_path, "pipe-holder", '''
        if os.fork() == 0:
            note(os.getpid())
            time.sleep(120)
            os._exit(0)
        wait_for(1)
    ''')
    shared_worker.use(TraceOptions(timeout=15))  # the old reader waited for end-of-file: a timeout
    listed = shared_worker.list_classes(str(path), str(path), None)
    assert [c.name for c in listed.classes] == ["Helper"]
    assert survivors(read_pids(pids, 1)) == []


def test_a_module_that_hangs_at_import_is_named_in_its_error(tmp_path: Path, shared_worker) -> None:
    from helpers import trace_targets

    path = tmp_path / "hangs_on_import.py"
    path.write_text("import time\ntime.sleep(120)\n\nclass Helper:\n    pass\n")
    report = trace_targets([str(path)], TraceOptions(timeout=1))
    assert report.exit_code == 2
    # It sleeps: idle, killed after --timeout seconds of wall time, not at the ceiling (3 x).
    (line,) = report.error_lines
    assert line.startswith(f"cannot import {path}: timeout: idle for "), line
    assert "a hang (CPU used 0.0 s of the 1 s limit in " in line and line.endswith(" s of wall time); killed"), line


# ---------------------------------------------------------------------------------------------
# Killing the worker, and the worker's parent dying
# ---------------------------------------------------------------------------------------------

PARENT = textwrap.dedent('''
    import sys
    from kvaudit.tracer.parent.client import WorkerClient
    from kvaudit.tracer.wire import ListReply, ListRequest

    client = WorkerClient()
    print(client.pid, flush=True)
    module = sys.argv[1]
    client.request(ListRequest(module, module, None, 120, 0), ListReply, 200)
''')

# A press that records itself, starts a process in a new session, and then hangs (or, first,
# kills kvaudit: the worker's parent, its own grandparent).
HANGS = '''
note(os.getpid())
note(subprocess.Popen(SLEEPER, start_new_session=True).pid)
wait_for(2)
{then}
time.sleep(120)
'''
KILL_GRANDPARENT = '''
worker = os.getppid()
kvaudit = int(open(f"/proc/{worker}/stat").read().rpartition(")")[2].split()[1])
os.kill(kvaudit, 9)
'''


@pytest.mark.parametrize("who", ["kvaudit-is-killed", "the-press-kills-kvaudit"])
def test_worker_and_press_stop_at_once_when_the_parent_dies(who: str, tmp_path: Path) -> None:
    then = KILL_GRANDPARENT if who == "the-press-kills-kvaudit" else ""
    path, pids = hostile_module(tmp_path, "hangs", HANGS.format(then=textwrap.dedent(then)))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        started = read_pids(pids, 2)
        if who == "kvaudit-is-killed":
            parent.kill()
        parent.wait(timeout=30)
        # The press would hang 120 s and its timeout is 120 s: only the parent's death stops them.
        assert survivors([worker, *started]) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_killing_the_worker_kills_what_its_press_started(tmp_path: Path) -> None:
    # What TraceSession does on Ctrl-C or an error while a press runs: close(kill=True).
    path, pids = hostile_module(tmp_path, "hangs", HANGS.format(then=""))
    client = WorkerClient()
    worker = client.pid
    request = ListRequest(str(path), str(path), None, 120, 0)
    waiting = threading.Thread(target=lambda: pytest.raises(WorkerError, client.request, request, ListReply, 60),
                               daemon=True)
    waiting.start()
    started = read_pids(pids, 2)
    client.close(kill=True)
    waiting.join(30)
    assert survivors([worker, *started]) == []


def test_a_press_that_kills_the_worker_dies_with_it(tmp_path: Path) -> None:
    path, pids = hostile_module(tmp_path, "kills_worker", '''
        note(os.getpid())
        note(subprocess.Popen(SLEEPER).pid)  # in the press's group: it must not outlive the worker
        wait_for(2)
        os.kill(os.getppid(), 9)
        time.sleep(120)
    ''')
    client = WorkerClient()
    request = ListRequest(str(path), str(path), None, 120, 0)
    try:
        with pytest.raises(WorkerError, match="trace worker exited"):
            client.request(request, ListReply, 60)
    finally:
        client.close(kill=True)
    assert survivors([client.pid, *read_pids(pids, 2)]) == []


def test_a_press_that_floods_stderr_costs_a_bounded_tail_and_one_short_line(tmp_path: Path) -> None:
    from kvaudit.tracer.parent.client import QUOTE_WIDTH, STDERR_TAIL_BYTES

    path, _ = hostile_module(tmp_path, "floods_stderr", '''
        line = b"x" * 1023 + b"\\n"
        for _ in range(64):  # 64 MiB
            os.write(2, line * 1024)
        os.kill(os.getppid(), 9)
        time.sleep(120)
    ''')
    client = WorkerClient()
    request = ListRequest(str(path), str(path), None, 120, 0)
    try:
        with pytest.raises(WorkerError) as raised:
            client.request(request, ListReply, 60)
        kept = len(client._stderr._data)
    finally:
        client.close(kill=True)
    message = str(raised.value)
    assert message.startswith("trace worker exited: killed by SIGKILL; its last line on stderr: xxx")
    assert len(message) < QUOTE_WIDTH + 100  # the 1,023-character line is cut
    assert kept <= 2 * STDERR_TAIL_BYTES  # a tail, never the 64 MiB


# ---------------------------------------------------------------------------------------------
# Through the real command: a press that spawns a daemon and kills kvaudit
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kvaudit_trace_leaves_nothing_behind_when_a_press_kills_it(tmp_path: Path) -> None:
    body = textwrap.dedent('''
        note(os.getppid())  # the worker
        note(os.getpid())
        note(subprocess.Popen(SLEEPER, start_new_session=True).pid)
        wait_for(3)
    ''') + KILL_GRANDPARENT + "time.sleep(120)\n"
    path, pids = hostile_module(tmp_path, "kills_kvaudit", body)
    out = subprocess.run([sys.executable, "-m", "kvaudit", "trace", str(path), "--timeout", "100"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    assert survivors(read_pids(pids, 3)) == []


def test_the_last_stderr_line_is_read_even_when_the_drain_is_late(monkeypatch: pytest.MonkeyPatch) -> None:
    # death() once took the tail right after wait(), while the drain thread could still be behind.
    import subprocess
    import sys
    import time

    from kvaudit.tracer.parent import client as client_module

    real_select = client_module.select.select

    def late_select(*args, **kwargs):
        time.sleep(0.2)  # a busy parent: the drain thread runs late
        return real_select(*args, **kwargs)

    monkeypatch.setattr(client_module.select, "select", late_select)
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('last words\\n'); sys.exit(3)"],
                               stderr=subprocess.PIPE)
    worker = object.__new__(client_module.WorkerClient)
    worker._process, worker._stderr = process, client_module.StderrTail(process.stderr.fileno())
    process.wait()
    try:
        assert worker.death() == "trace worker exited with status 3; its last line on stderr: last words"
    finally:
        worker._stderr.close()
        process.stderr.close()
