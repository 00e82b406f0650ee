"""Exit codes shared by every command (documented in README.md)."""

from __future__ import annotations

from .model import AuditResult, Severity

OK = 0  # nothing at or above --fail-on
FINDINGS = 1  # findings at or above --fail-on (or, for `trace`, a dynamic defect)
BAD_INPUT = 2  # a target missing, unreadable or unparsable; a usage or configuration error

FAIL_ON_CHOICES = ("error", "warning", "info", "never")


def check_exit_code(result: AuditResult, fail_on: str) -> int:
    """2 beats 1: a broken target must not pass a CI gate just because others were clean."""
    if result.has_errors:
        return BAD_INPUT
    if fail_on == "never":
        return OK
    threshold = Severity(fail_on).rank
    return FINDINGS if any(f.severity.rank >= threshold for f in result.findings) else OK
