"""The piped terminal view writes, without rich's per-line layout, the very bytes rich writes.

``print_findings`` (piped, no colour) writes a finding's lines itself and leaves to rich only the
excerpts rich would wrap, expand or strip. Each test renders the same findings both ways, through
``print_findings`` and through ``print_finding`` (rich for every line), and compares the bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from kvaudit.model import Finding, Severity
from kvaudit.reporters import terminal
from kvaudit.reporters.terminal import plain_finding, plain_width, print_finding, print_findings

# Derandomised: the same cases on every run (a gate must not turn red by chance).
CASES = settings(deadline=None, database=None, max_examples=150, derandomize=True,
                 suppress_health_check=list(HealthCheck))


def both_ways(findings: list[Finding], width: int) -> tuple[str, str]:
    """(what print_findings writes, what rich writes for each finding) on a piped console of ``width``."""
    fast, slow = io.StringIO(), io.StringIO()
    print_findings(findings, Console(file=fast, width=width))
    reference = Console(file=slow, width=width)
    for finding in findings:
        print_finding(finding, reference)
    return fast.getvalue(), slow.getvalue()


def finding(path: Path, line: int, message: str = "unused suppression: no KVA101 finding on this line",
            severity: Severity = Severity.WARNING) -> Finding:
    return Finding("KVA001", severity, line, message, str(path), column=9)


CODE = "\n".join([
    '"""A module."""',
    "x = 1",
    "",
    "def f(a, b):",
    "    return a + b   ",  # trailing blanks are kept
    "y = 'a long line of code that no 80-column excerpt can hold: ' + 'it wraps in rich, and only there'",
    "\tz = 2  # a tab: rich expands it",
    "w = '\x1b[31m'  # an escape character",
    "v = 'déjà vu'  # not ASCII",
    "u = '漢字'  # two cells a character",
    "\x0c",
    "t = 3",
    "",
    "",
]) + "\n"


@pytest.mark.parametrize("width", [40, 80, 200])
def test_every_line_of_a_tricky_file_is_written_as_rich_writes_it(tmp_path: Path, width: int) -> None:
    path = tmp_path / "tricky.py"
    path.write_text(CODE, encoding="utf-8")
    lines = CODE.count("\n")
    findings = [finding(path, line) for line in range(1, lines + 4)]  # and past the end of the file
    fast, slow = both_ways(findings, width)
    assert fast == slow


def test_simple_findings_take_the_plain_path_and_tricky_ones_do_not(tmp_path: Path) -> None:
    # Guards the speed: a plain excerpt must not fall back to rich (the comparisons above would still pass).
    path = tmp_path / "tricky.py"
    path.write_text(CODE, encoding="utf-8")
    assert plain_finding(finding(path, 2), 80) is not None  # lines 1-4: plain ASCII, short
    assert plain_finding(finding(path, 6), 80) is None  # line 6 is wider than the code column
    assert plain_finding(finding(path, 9), 200) is None  # lines 7-11: a tab, ESC, non-ASCII
    assert plain_finding(finding(tmp_path / "gone.py", 2), 80) is not None  # no excerpt at all


def test_line_numbers_widen_at_a_power_of_ten(tmp_path: Path) -> None:
    path = tmp_path / "long.py"
    path.write_text("".join(f"x{i} = {i}\n" for i in range(1, 1200)), encoding="utf-8")
    findings = [finding(path, line) for line in (1, 8, 9, 10, 97, 98, 99, 100, 998, 999, 1000, 1001)]
    fast, slow = both_ways(findings, 80)
    assert fast == slow


def test_paths_and_messages_with_control_characters_and_wide_text(tmp_path: Path) -> None:
    path = tmp_path / "a\tb\x1b[1m漢.py"
    path.write_text("x = 1\n", encoding="utf-8")
    messages = ["line one\nline two\t\ttabbed", "", "   ", "漢字 " * 60, "ends with a blank \u3000", "\x85 NEL"]
    findings = [finding(path, 1, message, severity) for message in messages for severity in Severity]
    fast, slow = both_ways(findings, 80)
    assert fast == slow


@CASES
@given(
    lines=st.lists(st.text(alphabet=st.sampled_from(list("ab  =_(),.:#'\t\x0c\x1bé漢❱")), max_size=90),
                   min_size=1, max_size=12),
    at=st.integers(min_value=1, max_value=14),
    width=st.integers(min_value=8, max_value=130),
)
def test_generated_excerpts(tmp_path_factory: pytest.TempPathFactory, lines: list[str], at: int, width: int) -> None:
    path = tmp_path_factory.mktemp("gen") / "gen.py"
    path.write_text("\n".join(lines), encoding="utf-8")
    fast, slow = both_ways([finding(path, at)], width)
    assert fast == slow


def test_a_console_that_records_or_has_colour_gets_every_line_through_rich() -> None:
    assert plain_width(Console(file=io.StringIO(), width=91)) == 91
    assert plain_width(Console(file=io.StringIO(), record=True)) is None
    assert plain_width(Console(file=io.StringIO(), force_terminal=True)) is None
    assert plain_width(Console(file=io.StringIO(), color_system="standard", force_terminal=False)) is None
    assert plain_width(Console(file=io.StringIO(), _environ={"FORCE_COLOR": "1"})) is None


def test_blocks_are_written_in_order_around_an_excerpt_only_rich_lays_out(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal, "PLAIN_BLOCK", 3)
    path = tmp_path / "mixed.py"
    path.write_text("".join("z = 'x' * 200  # too wide\n" if i % 7 == 0 else f"x{i} = {i}\n"
                            for i in range(1, 60)), encoding="utf-8")
    fast, slow = both_ways([finding(path, line) for line in range(1, 60)], 80)
    assert fast == slow


@pytest.mark.skipif(not hasattr(os, "pipe"), reason="needs a pipe")
def test_a_reader_that_leaves_raises_broken_pipe_as_rich_would(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_text("x = 1\n", encoding="utf-8")
    from kvaudit.reporters.console import console

    read, write = os.pipe()
    os.close(read)
    stream = open(write, "w", encoding="utf-8")
    try:
        with pytest.raises(BrokenPipeError):
            print_findings([finding(path, 1)], console(file=stream, width=80))
    finally:
        try:
            stream.close()
        except BrokenPipeError:  # what is still buffered cannot go anywhere
            pass
