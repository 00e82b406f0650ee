"""Run every benchmark script in turn (`make bench`); each prints its own Markdown table.

The figures, with the machine they came from, are copied into reports/benchmarks.md by hand
after a run: timings are never asserted in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_startup.py", "bench_check.py", "bench_trace.py", "bench_reference.py", "bench_corpus.py",
           "bench_suite.py", "bench_linear.py", "bench_terminal.py", "bench_scale.py", "bench_catalogue.py",
           "bench_reuse_quality.py", "bench_repro.py")


def main() -> int:
    here = Path(__file__).parent
    status = 0
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        status |= subprocess.run([sys.executable, str(here / script)]).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
