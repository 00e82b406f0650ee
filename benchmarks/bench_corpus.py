"""Benchmark: kvaudit's static verdicts against the real-code corpus (tests/corpus).

Each `# expect:` line of a corpus file (public kvpress forks, research repositories, MLX caches,
hand-written cases) and each entry of tests/corpus/kvpress-0.5.5.toml is one case, holding the
verdict reached by reading the code. Prints correct/total for each part and the whole, and the
cases kvaudit gets wrong.

    .venv/bin/python benchmarks/bench_corpus.py
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "tests" / "corpus" / "harness.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("kvaudit_corpus_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    harness = load_harness()
    start = time.perf_counter()
    parts = {"corpus files": harness.corpus_cases(), "kvpress 0.5.5 (--claim layer-index-reuse)": harness.kvpress_cases()}
    elapsed = time.perf_counter() - start
    print("| part | correct / total |\n| --- | --- |")
    every = []
    for name, cases in parts.items():
        every += cases
        print(f"| {name} | {sum(c.ok for c in cases)} / {len(cases)} |")
    print(f"| all | {sum(c.ok for c in every)} / {len(every)} |")
    for case in every:
        if not case.ok:
            print(f"wrong: {case.where} {case.press}: {'; '.join(case.problems)}")
    print(f"\n({elapsed:.2f} s for the audits)")
    return 0 if all(c.ok for c in every) else 1


if __name__ == "__main__":
    raise SystemExit(main())
