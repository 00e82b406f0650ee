"""Check and time the committed reproductions (issue 17): every script under ``reports/repro/`` exits 1 on kvpress.

Each script runs as ``__main__`` in one ``python -S`` process whose import path holds the venv's
site-packages without kvaudit (``tests/test_repro.py``'s ``site_without_kvaudit`` and ``run_isolated``, reused
as they are), so a script that needed kvaudit would fail. Prints each script's exit code and the time of the
whole run; exits 1 if any script does not exit 1.

Run: ``.venv/bin/python benchmarks/bench_repro.py [--dir reports/repro]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from measure import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_repro import run_isolated  # noqa: E402  (the tests' own runner: one copy of it)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "reports" / "repro")
    args = parser.parse_args()
    scripts = sorted(args.dir.resolve().glob("*.py"))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        results = run_isolated([(script, []) for script in scripts], Path(folder))
        seconds = time.perf_counter() - started
    codes = {name: code for (name, _), (code, _) in results.items()}
    print(f"machine: {machine()}\n")
    print("| script | exit code |\n| --- | --- |")
    for name in sorted(codes):
        print(f"| {name} | {codes[name]} |")
    tally = Counter(codes.values())
    print(f"\n{len(codes)} scripts in {seconds:.1f} s (one process without kvaudit); exit codes: "
          + ", ".join(f"{code}: {count}" for code, count in sorted(tally.items(), key=str)))
    return 0 if set(tally) == {1} else 1


if __name__ == "__main__":
    raise SystemExit(main())
