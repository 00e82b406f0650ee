"""Exit codes, and the one rule every command uses to pick one (documented in README.md).

``check`` gates on its findings at or above ``--fail-on``; ``trace`` is the same rule at ``error``
(a violated claim is KVA301, a defect KVA303, both errors); ``report`` never fails on findings
(``never``). Whatever the threshold, a target that could not be audited or traced wins (2).
"""

from __future__ import annotations

from .model import AuditResult, Severity

OK = 0  # nothing at or above --fail-on
FINDINGS = 1  # findings at or above --fail-on (for `trace`: a violated claim or a defect)
BAD_INPUT = 2  # a target missing, unreadable or unparsable; a usage or configuration error

FAIL_ON_CHOICES = ("error", "warning", "info", "never")


def exit_code(result: AuditResult, fail_on: str = "error") -> int:
    """2 beats 1: a broken target must not pass a CI gate just because others were clean."""
    if result.has_errors:
        return BAD_INPUT
    if fail_on == "never":
        return OK
    threshold = Severity(fail_on).rank
    return FINDINGS if any(f.severity.rank >= threshold for f in result.findings) else OK
