"""GitHub Actions workflow annotations: one ``::error``/``::warning``/``::notice`` line per finding.

Format (GitHub's workflow commands)::

    ::error file=audit/x.py,line=12,col=5,title=KVA101 reuse-missing::message

Escaping follows GitHub's toolkit: in the message ``%``, ``\\r`` and ``\\n`` become ``%25``,
``%0D`` and ``%0A``; property values also escape ``:`` and ``,`` (``%3A``, ``%2C``). Other
control characters (which GitHub cannot escape) are written as Python escapes (``\\x1b``).
Files that could not be audited become ``::error`` lines too; warnings about the run
(kvpress's source unreadable) ``::warning`` lines.
"""

from __future__ import annotations

from ..model import AuditResult, Severity
from ..rule import rule_by_id
from ..source import printable

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    # Other control characters (an ESC in a file name) have no escape of GitHub's: Python's, never raw.
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(command: str, message: str, **properties: object) -> str:
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def render_github(result: AuditResult) -> str:
    """One annotation per line, with a trailing newline; empty output when there is nothing to say."""
    lines = []
    for status in result.files:
        if status.status == "error":
            lines.append(annotation("error", status.message or "could not be audited", file=status.path,
                                    title="kvaudit: could not audit"))
    for finding in result.findings:
        rule = rule_by_id(finding.rule)
        title = f"{finding.rule} {rule.name}" if rule is not None else finding.rule
        # The Actions runner drops an annotation that spans lines and sets columns ("'col' and
        # 'endColumn' cannot be set if 'line' and 'endLine' are different values"): lines only then.
        one_line = finding.end_line is None or finding.end_line == finding.line
        lines.append(annotation(COMMANDS[finding.severity], finding.message, file=finding.path, line=finding.line,
                                col=finding.column if one_line else None, endLine=finding.end_line,
                                endColumn=finding.end_column if one_line else None, title=title))
    for warning in result.warnings:
        lines.append(annotation("warning", warning, title="kvaudit: incomplete audit"))
    return "".join(line + "\n" for line in lines)
