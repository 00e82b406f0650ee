"""Fuzzing as a test: ``kvaudit check`` on generated Python and on mutated press sources.

Properties, for every input: no traceback and no exception out of the command, no internal
error reported, exit code 0, 1 or 2 (1 only with findings shown), and a generous bound on
the time per file. CI runs the same 240 cases (80 per test) every time; ``make fuzz`` runs 10,000
new ones (``KVAUDIT_FUZZ_EXAMPLES``).

Seeds of the mutations: kvpress's installed press files and this suite's press fixtures.
Mutations: delete, duplicate, swap or cut lines; swap a class's bases (cycles included);
nest a block up to CPython's limits; add a long operator chain (near the parser's recursion
limit); change line ends and add form feeds.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import hypothesmith
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import STATIC_PRESSES, TESTS, run_cli

from kvaudit.targets import resolve_module

EXAMPLES = int(os.environ.get("KVAUDIT_FUZZ_EXAMPLES", "0")) or None
# hypothesmith compiles what it generates: `1()` and the like make CPython warn, which is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")
PER_FILE_S = 60.0  # a hang guard, not a speed test
# CI runs the same cases every time (derandomize): a gate must not turn red by chance. `make fuzz`
# (KVAUDIT_FUZZ_EXAMPLES set) explores new cases on each run.
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                max_examples=EXAMPLES or 80, derandomize=EXAMPLES is None)
# hypothesmith builds a LALR parser of Python's grammar per strategy (seconds): deferred, it is built by the
# worker that runs the test, not at collection by every pytest-xdist worker.


def _seeds() -> list[str]:
    folders = [STATIC_PRESSES, TESTS / "presses" / "dynamic"]
    presses = resolve_module("kvpress.presses")
    if presses is not None:
        folders.append(presses.parent)
    return [path.read_text(encoding="utf-8") for folder in folders for path in sorted(folder.glob("*.py"))]


SEEDS = _seeds()
PRESS_HEADER = ('"""ChunkKV (arXiv 2502.00299)."""\nfrom kvpress.presses.base_press import BasePress\n\n\n'
                "class FuzzPress(BasePress):\n    n_reuse: int = 2\n\n    def compress(self, module, keys, values):\n")


def _check_file(source: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.py"
        if isinstance(source, bytes):
            path.write_bytes(source)
        else:
            path.write_text(source, encoding="utf-8", errors="surrogatepass")
        start = time.monotonic()
        result = run_cli("check", str(path), "-f", "json", "--no-cache")
        elapsed = time.monotonic() - start
    assert result.exception is None, repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.exit_code in (0, 1, 2)
    payload = result.json()
    if result.exit_code == 1:
        assert [f for p in payload["presses"] for f in p["findings"]] or payload.get("other_findings")
    for status in payload["files"]:
        assert "\n" not in (status["message"] or "")
    assert elapsed < PER_FILE_S


# -- generated Python --------------------------------------------------------------------------------
@pytest.mark.slow
@FUZZ
@given(code=st.deferred(hypothesmith.from_grammar))
def test_generated_modules(code: str) -> None:
    _check_file(code)


@pytest.mark.slow
@settings(FUZZ, max_examples=EXAMPLES or 80)
@given(code=st.deferred(lambda: hypothesmith.from_grammar(start="file_input")))
def test_generated_code_inside_a_press_method(code: str) -> None:
    body = "".join(" " * 8 + line + "\n" for line in code.splitlines()) or "        pass\n"
    _check_file(PRESS_HEADER + body + "        return self.score(module, keys)\n")


# -- mutated press sources ---------------------------------------------------------------------------
_CLASS = re.compile(r"^class (\w+)(\([^)\n]*\))?:", re.MULTILINE)


def _mutate(data: st.DataObject, source: str) -> str | bytes:
    lines = source.split("\n")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "cut", "bases", "nest", "chain",
                                          "line-ends"]), label="kind")
        at = data.draw(st.integers(0, max(0, len(lines) - 1)), label="line")
        indent = re.match(r"[ \t]*", lines[at]).group() if lines else ""
        if kind == "delete" and lines:
            del lines[at]
        elif kind == "duplicate" and lines:
            lines.insert(at, lines[at])
        elif kind == "swap" and lines:
            other = data.draw(st.integers(0, len(lines) - 1), label="other")
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "cut":
            lines = lines[:at]
        elif kind == "bases":
            text = "\n".join(lines)
            names = _CLASS.findall(text)
            if names:
                choices = [n for n, _ in names] + ["BasePress", "object", "ScorerPress", "kvpress.presses.BasePress"]
                target = data.draw(st.sampled_from(names), label="class")[0]
                bases = data.draw(st.lists(st.sampled_from(choices), max_size=3), label="bases")
                text = re.sub(rf"^class {target}(\([^)\n]*\))?:", f"class {target}({', '.join(bases)}):", text,
                              count=1, flags=re.MULTILINE)
            lines = text.split("\n")
        elif kind == "nest":
            depth = data.draw(st.integers(1, 110), label="depth")
            block = [f"{indent}{'    ' * i}{'if x:' if i % 2 else 'for y in z:'}" for i in range(depth)]
            lines[at:at] = block + [f"{indent}{'    ' * depth}self.cache = self.score(module, keys)"]
        elif kind == "chain":
            terms = data.draw(st.integers(2, 3500), label="terms")
            operator = data.draw(st.sampled_from(["+", "%", " if c else ", ".x."]), label="operator")
            lines.insert(at, f"{indent}junk = {operator.join(['module.layer_idx'] * terms)}")
        else:
            ending = data.draw(st.sampled_from(["\r\n", "\r", "\n\x0c", "\n"]), label="ending")
            return ending.join(lines)
    return "\n".join(lines)


@pytest.mark.slow
@settings(FUZZ, max_examples=EXAMPLES or 80)
@given(data=st.data())
def test_mutated_press_sources(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SEEDS), label="seed")
    _check_file(_mutate(data, seed))


def test_the_seeds_are_there() -> None:
    # kvpress's presses and the fixtures: without them the mutation test would fuzz nothing real.
    assert len(SEEDS) >= 40 and any("class ChunkKVPress" in s for s in SEEDS)
