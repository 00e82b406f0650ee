"""``--format concise``: one line per finding, ``path:line:col: ID message``, as Ruff prints it.

Lines are never wrapped or cut, so ``grep``, editors and CI problem matchers read them;
control characters (a newline or an ESC in a file name) are written as Python escapes.
Targets that could not be audited go to stderr (``error: ...``), as in the terminal view.
"""

from __future__ import annotations

from ..model import AuditResult, Finding
from ..source import printable


def concise_line(finding: Finding) -> str:
    message = " ".join(finding.message.split())  # one line, whatever the rule wrote
    # A path (or code quoted in the message) may hold a newline or an ESC: escaped, never raw.
    return printable(f"{finding.path}:{finding.line}:{finding.column}: {finding.rule} {message}")


def summary(result: AuditResult) -> str:
    count = len(result.findings)
    return "No findings." if count == 0 else f"Found {count} finding{'s' if count != 1 else ''}."


def render_concise(result: AuditResult, quiet: bool = False) -> str:
    """Every finding on one line, then (unless ``quiet``) a one-line summary; a trailing newline."""
    lines = [concise_line(finding) for finding in result.findings]
    if not quiet:
        lines.append(summary(result))
    return "".join(line + "\n" for line in lines)
