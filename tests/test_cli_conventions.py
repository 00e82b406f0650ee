"""The conventions of Ruff and Semgrep (issue 8 §2): --version, -h, comma lists, concise, exit-zero,
quiet, statistics, select = [] on stderr, and piped terminal output that never cuts a location."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvaudit import __version__
from kvaudit.cli.check import BAD_INPUT
from kvaudit.exitcodes import BAD_INPUT as ENGINE_BAD_INPUT
from helpers import STATIC_PRESSES, run_cli

CHUNKKV = "kvpress.presses.chunkkv_press"
DECOY = str(STATIC_PRESSES / "decoy_logs_layer.py")  # KVA101 (error)
CONCISE = re.compile(r"^(?P<path>.+):(?P<line>\d+):(?P<col>\d+): (?P<rule>KVA\d+) (?P<message>.+)$")


def rules_of(*args: str) -> set[str]:
    result = run_cli("check", *args, "-f", "json")
    assert result.exception is None and result.exit_code in (0, 1), (result.exit_code, result.stderr)
    return {f["rule"] for p in result.json()["presses"] for f in p["findings"]}


def test_version_flag() -> None:
    for flag in ("--version", "-V"):
        result = run_cli(flag)
        assert result.exit_code == 0 and result.stdout == f"kvaudit {__version__}\n"


@pytest.mark.parametrize("command", [[], ["check"], ["rules"], ["trace"], ["report"], ["diff"]])
def test_short_and_long_help_on_the_app_and_every_command(command: list[str]) -> None:
    short, long = run_cli(*command, "-h"), run_cli(*command, "--help")
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout and short.stdout.startswith("Usage: ")


def test_exit_code_constant_of_the_light_cli_module_is_the_engines() -> None:
    assert BAD_INPUT == ENGINE_BAD_INPUT


def test_select_and_ignore_take_comma_lists_prefixes_and_repeats() -> None:
    everything = rules_of(CHUNKKV)
    assert {"KVA101", "KVA201", "KVA202", "KVA203"} <= everything
    assert rules_of(CHUNKKV, "--select", "KVA101,KVA202") == {"KVA101", "KVA202"}
    assert rules_of(CHUNKKV, "--select", "KVA101", "--select", "KVA202") == {"KVA101", "KVA202"}
    assert rules_of(CHUNKKV, "--select", "KVA2") == {r for r in everything if r.startswith("KVA2")}
    assert rules_of(CHUNKKV, "--select", "kva1, KVA203") == {"KVA101", "KVA203"}
    assert rules_of(CHUNKKV, "--ignore", "KVA2,KVA101") == everything - {"KVA101"} - {r for r in everything if r.startswith("KVA2")}
    bad = run_cli("check", CHUNKKV, "--select", "KVA101,KVA9")
    assert bad.exit_code == 2 and "error: --select: unknown rule id 'KVA9'" in bad.stderr


def test_concise_is_one_parsable_line_per_finding() -> None:
    full = run_cli("check", CHUNKKV, "-f", "json").json()
    findings = [f for p in full["presses"] for f in p["findings"]]
    result = run_cli("check", CHUNKKV, "--format", "concise")
    assert result.exit_code == 1
    *lines, summary = result.stdout.splitlines()
    assert summary == f"Found {len(findings)} findings."
    parsed = [CONCISE.match(line) for line in lines]
    assert all(parsed) and len(parsed) == len(findings)
    assert {(m["rule"], int(m["line"]), int(m["col"])) for m in parsed} == {
        (f["rule"], f["line"], f["column"]) for f in findings}
    assert all(m["path"].endswith("kvpress/presses/chunkkv_press.py") for m in parsed)
    quiet = run_cli("check", CHUNKKV, "--format", "concise", "--quiet")
    assert quiet.stdout.splitlines() == lines
    clean = run_cli("check", str(STATIC_PRESSES / "alg2_modulo.py"), "-f", "concise")
    assert clean.exit_code == 0 and clean.stdout == "No findings.\n"


def _deep_copy_of_a_press(root: Path) -> Path:
    folder = root
    for part in ["a_rather_long_folder_name_for_a_ci_checkout"] * 6:
        folder = folder / part
    folder.mkdir(parents=True)
    target = folder / "decoy_logs_layer_with_a_long_file_name.py"
    target.write_text(Path(DECOY).read_text(encoding="utf-8"), encoding="utf-8")
    return target


@pytest.mark.parametrize("fmt", ["terminal", "concise"])
def test_piped_output_never_cuts_the_location_whatever_the_width(tmp_path: Path, fmt: str) -> None:
    """A 300-character path at 40 columns, stdout a pipe: `path:line:col` still on one line, whole."""
    target = _deep_copy_of_a_press(tmp_path)
    expected = run_cli("check", str(target), "-f", "json").json()["presses"][0]["findings"][0]
    location = f"{target}:{expected['line']}:{expected['column']}"
    assert len(location) > 300
    kvaudit = Path(sys.executable).with_name("kvaudit")
    env = {**os.environ, "COLUMNS": "40", "TERM": "xterm-256color"}
    done = subprocess.run([str(kvaudit), "check", str(target), "-f", fmt], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert any(line.startswith(location) for line in done.stdout.splitlines()), done.stdout
    press_line = f"{target}:{run_cli('check', str(target), '-f', 'json').json()['presses'][0]['line']}"
    if fmt == "terminal":
        assert any(press_line in line for line in done.stdout.splitlines())  # the press overview too
        message = " ".join(expected["message"].split())
        assert any(line.strip() == message for line in done.stdout.splitlines())  # the message whole, one line


def test_exit_zero_keeps_bad_input_at_2(tmp_path: Path) -> None:
    assert run_cli("check", DECOY).exit_code == 1
    result = run_cli("check", DECOY, "--exit-zero", "-f", "concise")
    assert result.exit_code == 0 and "KVA101" in result.stdout
    (tmp_path / "broken.py").write_text("class (:\n")
    assert run_cli("check", DECOY, str(tmp_path / "broken.py"), "--exit-zero").exit_code == 2


def test_quiet_prints_findings_and_errors_only(tmp_path: Path) -> None:
    loud, quiet = run_cli("check", DECOY), run_cli("check", DECOY, "-q")
    assert loud.exit_code == quiet.exit_code == 1
    assert "press(es) audited" in loud.stdout and "press(es) audited" not in quiet.stdout
    assert "KVA101" in quiet.stdout
    (tmp_path / "broken.py").write_text("class (:\n")
    broken = run_cli("check", str(tmp_path / "broken.py"), "--quiet")
    assert broken.exit_code == 2 and "syntax error" in broken.stderr


def test_statistics_counts_per_rule() -> None:
    findings = [f["rule"] for p in run_cli("check", str(STATIC_PRESSES), "-f", "json").json()["presses"]
                for f in p["findings"]]
    result = run_cli("check", str(STATIC_PRESSES), "--statistics")
    assert result.exit_code == 1
    rows = [line.split() for line in result.stdout.splitlines()]
    counts = {row[1]: int(row[0]) for row in rows}
    assert counts == {rule: findings.count(rule) for rule in set(findings)}
    assert [int(row[0]) for row in rows] == sorted((int(row[0]) for row in rows), reverse=True)
    assert all(len(row) == 3 for row in rows)  # count, id, name
    as_json = run_cli("check", str(STATIC_PRESSES), "--statistics", "-f", "json").json()
    assert {row["code"]: row["count"] for row in as_json} == counts


def test_empty_select_in_the_config_says_so_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kvaudit.toml").write_text("select = []\n")
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", DECOY)
    assert result.exit_code == 0  # valid, and nothing runs...
    [line] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "select = [] selects no rule" in line  # ...but never silently
    assert "select = []" in run_cli("check", DECOY, "-f", "json").stderr


def test_piped_terminal_view_lists_presses_without_boxes() -> None:
    result = run_cli("check", CHUNKKV)
    assert result.exit_code == 1
    assert not set("┏┃┡│└┌") & set(result.stdout)
    assert re.search(r"^ChunkKVPress  .*chunkkv_press\.py:\d+$", result.stdout, re.MULTILINE)
    assert "layer-index-reuse (ChunkKV (arXiv 2502.00299)" in result.stdout and "missing" in result.stdout


def test_piped_trace_output_is_never_wrapped_or_cut() -> None:
    """`kvaudit trace` and the panel of `check --trace`, piped at 40 columns: each line whole, as `check`'s."""
    import io

    from rich.console import Console

    from kvaudit.model import AuditResult, ClaimCheck, ModelInfo, PressReport, PressTrace, TraceRun, TraceSummary
    from kvaudit.reporters.trace_terminal import render_trace_panel, render_trace_report

    message = ("every compressed layer keeps the last 64 positions (4096×1 at ratio 0.9); holds in all 7 runs it "
               "applies to; not applicable in 2")
    run = TraceRun(tokens=512, batch=1, score_calls=[1, 1], kept=[256, 256], reused_from=[None, None],
                   jaccard=[None, 0.5])
    trace = PressTrace("SomeRatherLongNamedPyramidPress", "some/long/path/to/the/press_module.py", "ok", runs=[run],
                       claims=[ClaimCheck("observation-window", "SnapKV (arXiv 2404.14469)", "holds", message)])
    report = AuditResult(presses=[PressReport(trace.name, trace.path, 1, trace=trace)],
                         traced=TraceSummary(model=ModelInfo(source="embedded tiny llama", layers=2), plan=["512×1"]))
    for render in (lambda c: render_trace_report(report, c),
                   lambda c: render_trace_panel(c, AuditResult(presses=[PressReport(trace.name, trace.path, 1,
                                                                                    trace=trace)]))):
        out = io.StringIO()
        console = Console(file=out, width=40, color_system=None)
        assert not console.is_terminal
        render(console)
        lines = out.getvalue().splitlines()
        assert any(line.endswith(f"(SnapKV (arXiv 2404.14469)): holds — {message}") for line in lines), lines
        assert all(line == line.rstrip() for line in lines)  # no padding to the width
        header = next(line for line in lines if "score()" in line and "kept" in line)
        assert header.split() == ["layer", "score()", "kept", "reused", "from", "Jaccard", "l-1"]  # one row, not folded


def test_shared_options_are_declared_once_and_offered_by_every_command() -> None:
    """One declaration of the tracer and files options (kvaudit.cli.options), the same flags on check, trace, report."""
    from dataclasses import fields

    import typer.main

    from kvaudit.cli import app
    from kvaudit.cli.options import FileFlags, TraceFlags

    command = typer.main.get_command(app)
    shared = {f.name for group in (FileFlags, TraceFlags) for f in fields(group)}
    for name in ("check", "trace", "report"):
        params = {param.name for param in command.commands[name].params}
        assert shared <= params, (name, sorted(shared - params))
    import kvaudit.cli

    folder = Path(kvaudit.cli.__file__).parent
    sources = "".join(path.read_text(encoding="utf-8") for path in folder.glob("*.py"))
    for flag in ("--arch", "--press", "--memory-limit", "--ratios", "--exclude", "--max-file-size", "--claim"):
        assert len(re.findall(rf'Option\(\s*"{flag}"', sources)) == 1, flag  # declared once


def test_report_compares_with_the_reference_by_default_and_check_does_not() -> None:
    import typer.main

    from kvaudit.cli import app

    command = typer.main.get_command(app)
    default = {name: next(p.default for p in command.commands[name].params if p.name == "compare_reference")
               for name in ("check", "trace", "report")}
    assert default == {"check": False, "trace": False, "report": True}
