"""Fingerprints of findings that survive edits elsewhere in the file.

A fingerprint hashes the rule id, the path, the press and the finding's source line with
its whitespace collapsed (not its line number), plus an occurrence count for identical
lines. Adding or removing lines above a finding keeps it; editing the finding's own line
changes it. SARIF's ``partialFingerprints`` and the baseline file (:mod:`kvaudit.baseline`)
both use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from .model import Finding
from .source import SourceError, read_text, split_lines

FINGERPRINT_KEY = "kvauditFinding/v1"


class SourceLines:
    """Source lines by display path, each file read once (and never past the size cap)."""

    def __init__(self) -> None:
        self._files: dict[str, list[str] | None] = {}

    def line(self, path: str, number: int) -> str | None:
        if path not in self._files:
            try:
                self._files[path] = split_lines(read_text(Path(path)))  # numbered as the finding's line
            except SourceError:
                self._files[path] = None
        lines = self._files[path]
        if lines is None or not 1 <= number <= len(lines):
            return None
        return lines[number - 1]


def fingerprint(finding: Finding, line_text: str | None, occurrence: int, path: str | None = None) -> str:
    """Stable across edits that move the finding: no line number, the line's text instead."""
    text = " ".join(line_text.split()) if line_text is not None else f"message:{finding.message}"
    shown = Path(path if path is not None else finding.path).as_posix()
    key = "\x1f".join((finding.rule, shown, finding.press or "", text, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def fingerprints(findings: Sequence[Finding], path_of: Callable[[Finding], str] | None = None,
                 lines: SourceLines | None = None) -> list[str]:
    """One fingerprint per finding, in order; ``path_of`` chooses the path hashed (default: the display path)."""
    lines = lines or SourceLines()
    seen: dict[str, int] = {}
    found = []
    for finding in findings:
        text = lines.line(finding.path, finding.line)
        path = path_of(finding) if path_of is not None else finding.path
        base = fingerprint(finding, text, 0, path)
        occurrence = seen.get(base, 0)
        seen[base] = occurrence + 1
        found.append(fingerprint(finding, text, occurrence, path))
    return found
