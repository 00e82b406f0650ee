"""Timing a cold command from outside: wall time and the peak memory of its process tree's largest member."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# Runs the command in a child and reports the child's own figures (ru_maxrss of RUSAGE_CHILDREN
# counts only the processes this wrapper waited for, so each measure gets a fresh wrapper).
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_mb": peak_kb / 1024, "rc": done.returncode,
                  "stderr": done.stderr.decode(errors="replace")[-2000:], "stdout_bytes": len(done.stdout)}))
"""


def kvaudit() -> str:
    return shutil.which("kvaudit", path=str(Path(sys.executable).parent)) or "kvaudit"


def cold(command: list[str]) -> dict:
    """Run ``command`` once; seconds, peak_mb, rc, the tail of its stderr."""
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def machine() -> str:
    """The machine a figure came from: CPU model, cores, Python, and the load average now."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}{load}"
