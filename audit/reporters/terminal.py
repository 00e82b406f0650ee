"""Rich terminal view of ``kvaudit check``: one row per press, then each finding in context."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..model import AuditResult, Finding, PressReport, Severity
from .trace_terminal import render_trace_panel

VERDICT_STYLES = {
    "implemented": "bold green", "observed": "bold green",
    "partial": "bold yellow",
    "missing": "bold red", "not-observed": "bold red",
}
SEVERITY_STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
CONTEXT_LINES = 2


def _claims_cell(press: PressReport) -> Text:
    if not press.claims:
        return Text("none", style="dim")
    return Text("\n".join(f"{c.id}\n{c.origin.summary}, L{c.line}" for c in press.claims))


def _verdict_cell(press: PressReport) -> Text:
    if not press.verdicts:
        return Text("—", style="dim")
    text = Text()
    for claim, verdict in press.verdicts.items():
        text.append(verdict, style=VERDICT_STYLES.get(verdict, ""))
    return text


def _evidence_cell(press: PressReport) -> Text:
    if not press.verdicts:
        return Text("")
    if not press.evidence:
        return Text("none found", style="dim")
    lines = [f"L{e.line} {e.kind}: {e.detail}" + (f" [{e.path}]" if e.path else "") for e in press.evidence]
    return Text("\n".join(lines))


def press_table(result: AuditResult) -> Table:
    table = Table(title="kvaudit check", show_lines=True, expand=True)
    table.add_column("press", style="bold", ratio=2)
    table.add_column("claim", ratio=2)
    table.add_column("verdict", ratio=1, min_width=len("implemented"))
    table.add_column("evidence", ratio=4)
    for press in result.presses:
        table.add_row(f"{press.name}\n{press.path}:{press.line}", _claims_cell(press), _verdict_cell(press),
                      _evidence_cell(press))
    return table


def _source_excerpt(finding: Finding) -> Syntax | None:
    path = Path(finding.path)
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    start = max(1, finding.line - CONTEXT_LINES)
    return Syntax(code, "python", line_numbers=True, line_range=(start, finding.line + CONTEXT_LINES),
                  highlight_lines={finding.line}, theme="ansi_dark", word_wrap=True)


def finding_panel(finding: Finding) -> Panel:
    title = Text.assemble((finding.rule, SEVERITY_STYLES[finding.severity]), f" {finding.severity.value}  ",
                          (f"{finding.path}:{finding.line}", "dim"))
    excerpt = _source_excerpt(finding)
    body = Group(Text(finding.message), excerpt) if excerpt is not None else Text(finding.message)
    return Panel(body, title=title, title_align="left", border_style=SEVERITY_STYLES[finding.severity])


def summary_line(result: AuditResult) -> Text:
    counts = {s: sum(1 for f in result.findings if f.severity is s) for s in Severity}
    bad_files = sum(1 for f in result.files if f.status == "error")
    text = Text(f"{len(result.presses)} press(es) audited: ")
    text.append(f"{counts[Severity.ERROR]} error(s)", style=SEVERITY_STYLES[Severity.ERROR] if counts[Severity.ERROR] else "")
    text.append(f", {counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info")
    if bad_files:
        text.append(f"; {bad_files} target(s) could not be audited", style="bold red")
    return text


def render_terminal(result: AuditResult, console: Console, errors: Console | None = None) -> None:
    """Print the whole check result on ``console``; unauditable targets go to ``errors``."""
    errors = errors or console
    for status in result.files:
        if status.status == "error":
            # One line each, never wrapped: people and scripts grep these.
            errors.print(Text(f"error: {status.message}", style="bold red"), soft_wrap=True)
    if result.presses:
        console.print(press_table(result))
    for finding in result.findings:
        console.print(finding_panel(finding))
    if any(press.trace is not None for press in result.presses):
        render_trace_panel(console, result)
    console.print(summary_line(result))
