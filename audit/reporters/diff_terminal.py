"""``kvaudit diff`` in a terminal: the Markdown view's sections, styled with rich.

Piped (stdout not a terminal), the text is plain and every line comes whole, never wrapped or cut,
as the other views print (:func:`kvaudit.reporters.console.print_unwrapped`). Text from the
documents is never read as rich markup. A plain function of the diff.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..diff import BETTER, WORSE, AuditDiff
from ..source import printable
from .diff_text import describe, sections, sides_line, verdict_line

STYLE = {WORSE: "bold red", BETTER: "bold green"}


def _line(console: Console, text: Text) -> None:
    console.print(text, soft_wrap=True)  # soft_wrap: never folded or cut, in a terminal as piped


def render_diff_terminal(diff: AuditDiff, console: Console) -> None:
    _line(console, Text(printable(f"kvaudit diff: {diff.old.path} → {diff.new.path}"), style="bold"))
    _line(console, Text(printable(sides_line(diff)), style="dim"))
    for warning in diff.warnings:
        _line(console, Text(printable(f"warning: {warning}"), style="yellow"))
    for title, changes in sections(diff):
        _line(console, Text(""))
        _line(console, Text(f"{title} ({len(changes)})", style="bold underline"))
        for change in changes:
            said = describe(change)
            text = Text("  ")
            text.append(said.mark, style=STYLE.get(change.effect, "dim"))
            text.append(" ")
            text.append(printable(said.press), style="bold")
            if said.subject:
                text.append(printable(f" · {said.subject}"))
            text.append(printable(f": {said.transition}"), style=STYLE.get(change.effect, ""))
            _line(console, text)
            for detail in said.details:
                _line(console, Text(printable(f"      {detail}")))
    _line(console, Text(""))
    _line(console, Text(verdict_line(diff), style=STYLE[WORSE] if diff.worse else "bold"))
