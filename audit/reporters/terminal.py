"""Rich terminal view of ``kvaudit check``: one row per press, then each finding in context.

A finding's location (``path:line:col``) is printed on a line of its own that is never
wrapped or cut, whatever the width: a long path must not eat ``chunkkv_press.py:69``. In a
terminal the presses form a table and each finding's excerpt sits in a box; piped (CI logs,
``| grep``), the same content comes as plain lines.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..model import AuditResult, Finding, PressReport, Severity
from ..source import SourceError, printable, read_text, split_lines

VERDICT_STYLES = {
    "implemented": "bold green", "observed": "bold green",
    "partial": "bold yellow",
    "missing": "bold red", "not-observed": "bold red",
}
SEVERITY_STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
CONTEXT_LINES = 2
EXCERPT_TAB_SIZE = 4  # rich's default for Syntax


def _claim_text(claim) -> Text:
    return Text(f"{claim.id}\n{printable(claim.origin.summary)}, L{claim.line}")


def _verdict_text(verdict: str | None) -> Text:
    if verdict is None:
        return Text("—", style="dim")
    return Text(verdict, style=VERDICT_STYLES.get(verdict, ""))


def _evidence_lines(press: PressReport) -> list[str]:
    return [printable(f"L{e.line} {e.kind}: {e.detail}" + (f" [{e.path}]" if e.path else "")) for e in press.evidence]


def _evidence_cell(press: PressReport) -> Text:
    if not press.verdicts:
        return Text("")
    if not press.evidence:
        return Text("none found", style="dim")
    return Text("\n".join(_evidence_lines(press)))


def press_table(result: AuditResult) -> Table:
    """One row per claim, its verdict beside it; a press's name and evidence on its first rows.

    Every cell is a :class:`Text`: paths, code and rule text are never read as rich markup.
    """
    table = Table(title="kvaudit check", show_lines=False, expand=True)
    table.add_column("press", style="bold", ratio=2, overflow="fold")  # a path is folded, never cut
    table.add_column("claim", ratio=2)
    table.add_column("verdict", ratio=1, min_width=len("implemented"))
    table.add_column("evidence", ratio=4)
    for press in result.presses:
        name = Text(f"{printable(press.name)}\n{printable(press.path)}:{press.line}")
        for mention in press.mentions:  # papers named without a claim: said under the name
            name.append(f"\n{printable(mention.text)}", style="dim")
        if not press.claims:
            table.add_row(name, Text("none", style="dim"), _verdict_text(None), _evidence_cell(press), end_section=True)
            continue
        # The evidence goes with the first claim that has a verdict (the one it supports).
        judged = next((i for i, c in enumerate(press.claims) if c.id in press.verdicts), 0)
        for number, claim in enumerate(press.claims):
            table.add_row(name if number == 0 else None, _claim_text(claim),
                          _verdict_text(press.verdicts.get(claim.id)),
                          _evidence_cell(press) if number == judged else None,
                          end_section=number == len(press.claims) - 1)
    return table


def print_press_lines(result: AuditResult, console: Console) -> None:
    """The press table as plain lines, for piped output: nothing is boxed, locations are never cut."""
    for press in result.presses:
        console.print(Text.assemble((printable(press.name), "bold"), f"  {printable(press.path)}:{press.line}"),
                      soft_wrap=True)
        for claim in press.claims:
            verdict = press.verdicts.get(claim.id, "—")
            console.print(Text.assemble(f"  {claim.id} ({printable(claim.origin.summary)}, L{claim.line}): ",
                                        (verdict, VERDICT_STYLES.get(verdict, ""))), soft_wrap=True)
        if not press.claims:
            console.print(Text("  claims: none", style="dim"), soft_wrap=True)
        for mention in press.mentions:
            console.print(Text(f"  {printable(mention.text)}", style="dim"), soft_wrap=True)
        if press.verdicts:
            for line in _evidence_lines(press) or ["none found"]:
                console.print(Text(f"    evidence: {line}"), soft_wrap=True)


@lru_cache(maxsize=16)
def _file_lines(path: str, stamp: tuple[int, int]) -> tuple[str, ...] | None:
    """The lines of a file, read once per (path, mtime and size) for all its findings."""
    try:
        return tuple(split_lines(read_text(Path(path))))
    except SourceError:
        return None


@lru_cache(maxsize=1)
def _python_lexer() -> Lexer:
    # Built once, as rich builds it for each Syntax given the name "python" (a lookup that cost
    # a quarter of the time of a finding's excerpt).
    return get_lexer_by_name("python", stripnl=False, ensurenl=True, tabsize=EXCERPT_TAB_SIZE)


def _excerpt_code(finding: Finding) -> tuple[int, str] | None:
    """The first line number and the code of a finding's excerpt; None when its file cannot be read."""
    try:
        status = os.stat(finding.path)
    except OSError:
        return None
    lines = _file_lines(finding.path, (status.st_mtime_ns, status.st_size))
    if lines is None:
        return None
    # Only the excerpt is highlighted: highlighting the whole file for each finding made a file with
    # hundreds of findings cost a minute.
    start = max(1, finding.line - CONTEXT_LINES)
    return start, "\n".join(lines[start - 1 : finding.line + CONTEXT_LINES])


def _source_excerpt(finding: Finding) -> Syntax | None:
    excerpt = _excerpt_code(finding)
    if excerpt is None:
        return None
    start, code = excerpt
    return Syntax(code, _python_lexer(), line_numbers=True, start_line=start, highlight_lines={finding.line},
                  theme="ansi_dark", word_wrap=True, tab_size=EXCERPT_TAB_SIZE)


def location(finding: Finding) -> str:
    return f"{printable(finding.path)}:{finding.line}:{finding.column}"


def finding_header(finding: Finding) -> Text:
    return Text.assemble((location(finding), "bold"), " ", (finding.rule, SEVERITY_STYLES[finding.severity]),
                         f" {finding.severity.value}")


def finding_panel(finding: Finding) -> Panel:
    excerpt = _source_excerpt(finding)
    message = Text(printable(finding.message))
    body = Group(message, excerpt) if excerpt is not None else message
    return Panel(body, border_style=SEVERITY_STYLES[finding.severity])


def print_finding(finding: Finding, console: Console) -> None:
    # soft_wrap: the location line goes out whole, however long, never folded or cropped.
    console.print(finding_header(finding), soft_wrap=True)
    if console.is_terminal:
        console.print(finding_panel(finding))
        return
    # Piped: the message on one line, as the location line (a log is read and grepped, not a window).
    console.print(Text(_piped_message(finding)), soft_wrap=True)
    excerpt = _source_excerpt(finding)
    if excerpt is not None:
        console.print(excerpt)
    console.print()


def _piped_message(finding: Finding) -> str:
    return "  " + " ".join(printable(finding.message).split())


# -- piped without colour: the same lines, written without rich's layout per line --------------
# rich lays out every line of every finding (about 1 ms a finding: 20,000 unused suppressions took
# 15 s). Piped without colour, what it writes for a finding is plain text whose layout is known:
# the two soft-wrapped lines as they are, and each excerpt line behind its number column, untouched
# when it fits the width. :func:`plain_finding` writes exactly that, and leaves to rich every
# excerpt it would wrap, expand or strip (tests/test_terminal_plain.py compares the two).
PLAIN_BLOCK = 500  # findings written per write() (and flush)


def plain_width(console: Console) -> int | None:
    """The width ``console`` lays piped lines out at when it writes them without any markup; else None.

    None in a terminal, with colour (``FORCE_COLOR``), or when rich must see every line: a console that
    records, captures, is quiet, soft-wraps everything or runs on a legacy Windows console.
    """
    if (console.is_terminal or console.color_system is not None or console.record or console.quiet
            or console.soft_wrap or console.legacy_windows or console.is_jupyter
            or getattr(console, "_buffer_index", 0)):  # inside a capture or a `with console:` block
        return None
    return console.width


def plain_excerpt(start: int, code: str, highlight: int, width: int) -> str | None:
    """The lines rich writes for ``Syntax(code, line_numbers=True, start_line=start, word_wrap=True,
    highlight_lines={highlight})`` without colour at ``width``; None when rich would change a line
    (wider than the code column, a tab, a control or non-ASCII character)."""
    lines = code.split("\n")
    numbers = len(str(start + len(lines) - 1)) + 2  # rich's number column, its 2-cell marker included
    room = width - numbers - 1
    if room < 1:
        return None
    out = []
    for number, line in enumerate(lines, start):
        if len(line) > room or not (line.isascii() and line.isprintable()):
            return None
        out.append(f"{'❱ ' if number == highlight else '  '}{str(number).rjust(numbers - 2)} {line}\n")
    return "".join(out)


def plain_finding(finding: Finding, width: int) -> str | None:
    """What :func:`print_finding` writes for ``finding`` on a console of :func:`plain_width` ``width``; None
    when only rich can lay out its excerpt."""
    # printable() escaped every control character (tabs too) and the message's blanks are single
    # spaces: rich writes both lines unchanged (soft_wrap: never cut or wrapped).
    head = f"{location(finding)} {finding.rule} {finding.severity.value}\n{_piped_message(finding)}\n"
    excerpt = _excerpt_code(finding)
    if excerpt is None:
        return head + "\n"
    code = plain_excerpt(excerpt[0], excerpt[1], finding.line, width)
    return None if code is None else head + code + "\n"


def _write(console: Console, text: str) -> None:
    """Write ``text`` to the console's file as rich does (a broken pipe goes to ``on_broken_pipe``)."""
    try:
        console.file.write(text)
        console.file.flush()
    except BrokenPipeError:
        console.on_broken_pipe()


def print_findings(findings: list[Finding], console: Console) -> None:
    """:func:`print_finding` for each finding; piped without colour, the same bytes in blocks."""
    width = plain_width(console)
    if width is None:
        for finding in findings:
            print_finding(finding, console)
        return
    block: list[str] = []
    for finding in findings:
        text = plain_finding(finding, width)
        if text is None:  # rich lays this one out, after what came before it
            if block:
                _write(console, "".join(block))
                block = []
            print_finding(finding, console)
            continue
        block.append(text)
        if len(block) >= PLAIN_BLOCK:
            _write(console, "".join(block))
            block = []
    if block:
        _write(console, "".join(block))


def summary_line(result: AuditResult) -> Text:
    counts = dict.fromkeys(Severity, 0)
    for finding in result.findings:  # (a property that sorts every finding: read once)
        counts[finding.severity] += 1
    bad_files = sum(1 for f in result.files if f.status == "error")
    text = Text(f"{len(result.presses)} press(es) audited: ")
    text.append(f"{counts[Severity.ERROR]} error(s)", style=SEVERITY_STYLES[Severity.ERROR] if counts[Severity.ERROR] else "")
    text.append(f", {counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info")
    if bad_files:
        text.append(f"; {bad_files} target(s) could not be audited", style="bold red")
    if result.unanalysed:
        text.append(unanalysed_summary(result), style="yellow")
    return text


def unanalysed_summary(result: AuditResult) -> str:
    """``; 1 class not analysed: its base X is not in the run, nor in kvpress`` (or their count)."""
    if len(result.unanalysed) == 1:
        return f"; 1 class not analysed: {printable(result.unanalysed[0].why)}"
    classes = {(u.path, u.name) for u in result.unanalysed}
    return f"; {len(classes)} classes not analysed: their bases cannot be read (see the warnings)"


def print_problems(result: AuditResult, errors: Console) -> None:
    """One line per target that could not be audited, and per warning about the run; never wrapped."""
    for status in result.files:
        if status.status == "error":
            errors.print(Text(printable(f"error: {status.message}"), style="bold red"), soft_wrap=True)
    for warning in result.warnings:
        errors.print(Text(printable(f"warning: {warning}"), style="yellow"), soft_wrap=True)


def render_terminal(result: AuditResult, console: Console, errors: Console | None = None, quiet: bool = False) -> None:
    """Print the whole check result on ``console``; unauditable targets and warnings go to ``errors``.

    ``quiet`` keeps the findings (and the error lines) and drops the press overview and the summary.
    """
    print_problems(result, errors or console)
    if result.presses and not quiet:
        if console.is_terminal:
            console.print(press_table(result))
        else:
            print_press_lines(result, console)
    print_findings(result.findings, console)
    if any(press.trace is not None for press in result.presses):
        from .trace_terminal import render_trace_panel  # the tracer's modules load only when it ran

        render_trace_panel(console, result)
    if not quiet:
        console.print(summary_line(result), soft_wrap=True)  # one line, however long, as the finding lines
