"""`--format github`: GitHub Actions workflow annotations, escaped as GitHub's toolkit does."""

from __future__ import annotations

from kvaudit.model import AuditResult, FileStatus, Finding, PressReport, Severity
from kvaudit.reporters.github import escape_data, escape_property, render_github
from helpers import run_cli


def test_escaping_follows_the_toolkit() -> None:
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_data("a: b, c") == "a: b, c"  # data keeps ':' and ','
    assert escape_property("a:b,c%d\ne") == "a%3Ab%2Cc%25d%0Ae"


def test_one_annotation_per_finding_with_levels_and_escaped_properties() -> None:
    findings = [
        Finding(rule="KVA101", severity=Severity.ERROR, line=7, column=3, message="50% of\nlayers", path="a,b:c.py", press="P"),
        Finding(rule="KVA203", severity=Severity.WARNING, line=9, message="slow", path="a,b:c.py", press="P"),
        Finding(rule="KVA202", severity=Severity.INFO, line=2, message="default", path="a,b:c.py", press="P"),
    ]
    result = AuditResult(files=[FileStatus("a,b:c.py", "ok"), FileStatus("gone.py", "error", "gone.py: no such file")],
                         presses=[PressReport(name="P", path="a,b:c.py", line=1, findings=findings)])
    result.sort()
    lines = render_github(result).splitlines()
    assert lines == [
        "::error file=gone.py,title=kvaudit%3A could not audit::gone.py: no such file",
        "::notice file=a%2Cb%3Ac.py,line=2,col=1,title=KVA202 paper-default-mismatch::default",
        "::error file=a%2Cb%3Ac.py,line=7,col=3,title=KVA101 reuse-missing::50%25 of%0Alayers",
        "::warning file=a%2Cb%3Ac.py,line=9,col=1,title=KVA203 python-loop-over-index-tensor::slow",
    ]


def test_a_finding_spanning_lines_has_no_columns() -> None:
    # GitHub's runner rejects (and drops) an annotation whose line and endLine differ and that sets col or
    # endColumn; a one-line range keeps its columns.
    findings = [
        Finding(rule="KVA301", severity=Severity.ERROR, line=6, column=1, end_line=14, end_column=33, message="m",
                path="p.py", press="P"),
        Finding(rule="KVA101", severity=Severity.ERROR, line=20, column=5, end_line=20, end_column=9, message="n",
                path="p.py", press="P"),
    ]
    result = AuditResult(files=[FileStatus("p.py", "ok")], presses=[PressReport(name="P", path="p.py", line=6,
                                                                                findings=findings)])
    assert render_github(result).splitlines() == [
        "::error file=p.py,line=6,endLine=14,title=KVA301 claim-violated::m",
        "::error file=p.py,line=20,col=5,endLine=20,endColumn=9,title=KVA101 reuse-missing::n",
    ]


def test_nothing_to_say_is_empty() -> None:
    assert render_github(AuditResult(files=[FileStatus("x.py", "ok")])) == ""


def test_cli_github_format_on_kvpress_chunkkv(kvpress_presses_dir) -> None:
    result = run_cli("check", "kvpress.presses.chunkkv_press", "--format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    text = (kvpress_presses_dir / "chunkkv_press.py").read_text(encoding="utf-8").splitlines()
    loop = next(n for n, line in enumerate(text, 1) if "for chunk_idx in top_chunks.indices[0]" in line)
    assert any(line.startswith("::error ") and f",line={loop}," in line and "title=KVA201 batch-row-0::" in line
               for line in lines)
    assert all("\n" not in line[2:] for line in lines)


def test_pre_commit_hook_runs_kvaudit_check_on_python_files() -> None:
    from pathlib import Path

    import pytest

    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((Path(__file__).parents[1] / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    [hook] = hooks
    assert hook["id"] == "kvaudit" and hook["entry"] == "kvaudit check --force-exclude"
    assert hook["language"] == "python" and hook["types"] == ["python"]
