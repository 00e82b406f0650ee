"""``kvaudit diff --format markdown``: the diff as a pull-request comment.

A heading, one sentence that says whether anything got worse, the warnings, then one section per
kind of change (what got worse first), one bullet per change: ✗ worse, ✓ better, · neither.
Text from the documents (press names, messages, acceptance reasons) is escaped, so a message that
holds ``*`` or ``<`` renders as written. A plain function of the diff; the same diff gives the same bytes.
"""

from __future__ import annotations

import re

from ..diff import AuditDiff
from .diff_text import describe, sections, sides_line, verdict_line

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~!])")
MARKER = "<!-- kvaudit:diff -->"  # lets a CI job find and update its own comment


def escape(text: str) -> str:
    """``text`` as literal Markdown: special characters escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def render_diff_markdown(diff: AuditDiff, title: str | None = None) -> str:
    heading = title or f"kvaudit diff: {diff.old.path} → {diff.new.path}"
    lines = [MARKER, f"### {escape(heading)}", "", f"**{escape(verdict_line(diff))}**", "",
             f"Compared {escape(sides_line(diff))}."]
    if diff.warnings:
        lines += ["", *[f"> ⚠ {escape(warning)}" for warning in diff.warnings]]
    for title_text, changes in sections(diff):
        lines += ["", f"#### {title_text} ({len(changes)})", ""]
        for change in changes:
            said = describe(change)
            subject = f" · {escape(said.subject)}" if said.subject else ""
            lines.append(f"- {said.mark} **{escape(said.press)}**{subject}: {escape(said.transition)}")
            lines += [f"  - {escape(detail)}" for detail in said.details]
    return "\n".join(lines) + "\n"
