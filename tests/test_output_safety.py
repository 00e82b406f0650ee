"""What kvaudit prints is never read as anything but text.

- paths, code and rule documentation are never parsed as rich markup (a path such as
  ``/abs/base.py`` in brackets is a closing tag: it crashed piped output; ``[key]`` vanished);
- control characters in file names (a newline, an ESC) are escaped, never written raw;
- the terminal table puts each verdict beside its own claim;
- a reader that leaves early (``| head``, ``| true``) ends the run quietly with exit 141.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from helpers import NO_REUSE, REUSE_BASE, STATIC_PRESSES, run_cli

from kvaudit.engine import CheckOptions, run_check
from kvaudit.reporters.terminal import render_terminal

CONCISE = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+): (?P<rule>KVA\d+) (?P<message>.+)$")


SUB = '''"""ChunkKV, arXiv 2502.00299."""
from dataclasses import dataclass

from base import ReuseBase


@dataclass
class Sub(ReuseBase):
    pass
'''


def tty_render(targets: list[str], width: int = 220) -> str:
    """The terminal view as a terminal gets it (table and boxes), colours stripped."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=width, color_system=None)
    render_terminal(run_check(targets, CheckOptions()), console, errors=console)
    return buffer.getvalue()


# -- rich markup -----------------------------------------------------------------------------
def test_evidence_from_a_file_outside_the_working_directory_does_not_crash_piped_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "base.py").write_text(REUSE_BASE)
    (tmp_path / "proj" / "sub.py").write_text(SUB)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = run_cli("check", "../proj/sub.py")  # piped: plain lines
    assert result.exception is None
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr  # a clean run (was: MarkupError, exit 2)
    base = (tmp_path / "proj" / "base.py").resolve().as_posix()
    assert f"[{base}]" in result.stdout  # the evidence names the base's file, brackets and all


def test_code_and_paths_in_evidence_are_printed_as_they_are() -> None:
    result = run_cli("check", str(STATIC_PRESSES / "group_dict_cleared.py"), str(STATIC_PRESSES / "stale_group_dict.py"))
    assert result.exception is None
    assert "`self.memo[key]` reads" in result.stdout  # `[key]` was eaten as a style tag
    assert "`self.by_group[group]` reads" in result.stdout


def test_a_folder_named_like_markup_is_shown_as_named_in_the_table(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "[red]x").mkdir()
    (tmp_path / "[red]x" / "p.py").write_text(NO_REUSE)
    monkeypatch.chdir(tmp_path)
    assert "[red]x/p.py:8" in tty_render(["."])


@pytest.mark.parametrize(("rule", "text"), [("KVA301", "[[tool.kvaudit.accept]]"), ("KVA302", "[[tool.kvaudit.accept]]"),
                                            ("KVA201", "a ``[start, end]`` pair")])
def test_rule_documentation_keeps_its_brackets(rule: str, text: str) -> None:
    result = run_cli("rules", rule)
    assert result.exit_code == 0
    assert text in result.stdout


# -- the terminal table ----------------------------------------------------------------------
def test_each_verdict_sits_beside_its_own_claim_in_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.py").write_text(NO_REUSE)  # claims chunk-selection, layer-index-reuse, observation-window
    monkeypatch.chdir(tmp_path)
    lines = tty_render(["p.py"]).splitlines()
    [reuse] = [line for line in lines if "layer-index-reuse" in line]
    [chunks] = [line for line in lines if "chunk-selection" in line]
    [window] = [line for line in lines if "observation-window" in line]
    assert "missing" in reuse
    assert "missing" not in chunks and "—" in chunks
    assert "missing" not in window and "—" in window


# -- control characters in file names --------------------------------------------------------
@pytest.fixture
def odd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("a\nb.py", "c\x1b[31md.py"):
        (tmp_path / name).write_text(NO_REUSE)
    (tmp_path / "e\x1b[31mf").mkdir()  # a folder target with no press: an `error:` line names it
    (tmp_path / "e\x1b[31mf" / "x.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_concise_stays_one_line_per_finding_with_control_characters_in_names(odd_names: Path) -> None:
    result = run_cli("check", ".", "e\x1b[31mf", "-f", "concise")
    assert result.exit_code == 2  # the folder without presses
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] == "Found 2 findings."
    assert all(CONCISE.match(line) for line in lines[:2])
    assert {CONCISE.match(line)["path"] for line in lines[:2]} == {"a\\nb.py", "c\\x1b[31md.py"}
    assert "\x1b" not in result.stdout + result.stderr
    assert "error: e\\x1b[31mf: no press classes found" in result.stderr.splitlines()


@pytest.mark.parametrize("output", ["terminal", "github"])
def test_other_line_formats_escape_control_characters(odd_names: Path, output: str) -> None:
    result = run_cli("check", ".", "-f", output)
    assert result.exit_code == 1
    assert "\x1b" not in result.stdout + result.stderr
    assert not any(line.startswith("b.py") for line in result.stdout.splitlines())  # never split in two


def test_the_terminal_table_escapes_control_characters(odd_names: Path) -> None:
    shown = tty_render(["."])
    assert "\x1b" not in shown and "c\\x1b[31md.py" in shown


# -- a reader that leaves ---------------------------------------------------------------------
def _run_with_stdout_closed(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``kvaudit ARGS | true``, deterministically: the pipe has no reader before kvaudit starts."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "kvaudit", *args], stdout=writer, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, timeout=120)
    finally:
        os.close(writer)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["check", ".", "-f", "concise"], ["check", ".", "-f", "json"], ["check", "."],
                                  ["rules"], ["--help"]])
def test_a_reader_that_leaves_ends_the_run_quietly_with_exit_141(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "p.py").write_text(NO_REUSE)
    done = _run_with_stdout_closed(args, tmp_path)
    assert (done.returncode, done.stderr) == (141, "")  # was: "internal error" exit 2, or exit 1


def test_a_broken_pipe_that_is_not_our_output_is_still_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvaudit.cli import check as check_module

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a worker's pipe; stdout itself is fine

    monkeypatch.setattr(check_module, "emit", broken)
    (tmp_path / "p.py").write_text(NO_REUSE)
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", "p.py")
    assert result.exception is None
    assert result.exit_code == 2 and "internal error in kvaudit: BrokenPipeError" in result.stderr
