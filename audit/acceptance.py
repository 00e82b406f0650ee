"""Accepted deviations: ``[[tool.kvaudit.accept]]`` entries applied to the claims the tracer checked.

An acceptance names a press (a class name or glob), a claim and a reason. A violated claim it
matches is shown as accepted, with the reason, and no longer gates CI; like an inline
suppression for static findings. An acceptance that matches no violated claim is reported
(KVA302), so that a stale one cannot hide the next real violation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .config import Acceptance
from .model import VIOLATED, AuditResult, Finding, PressReport, PressTrace, Severity

CLAIM_VIOLATED = "KVA301"
UNUSED_ACCEPTANCE = "KVA302"
TRACE_DEFECT = "KVA303"


@dataclass(frozen=True)
class UnusedAcceptance:
    """An acceptance that covered nothing, and why."""

    acceptance: Acceptance
    why: str

    @property
    def message(self) -> str:
        a = self.acceptance
        return f"{a.origin} accepts claim {a.claim!r} of press {a.press!r}, but {self.why}"


def apply_acceptances(traces: Iterable[PressTrace], acceptances: list[Acceptance]) -> list[UnusedAcceptance]:
    """Mark every violated claim an acceptance matches; return the acceptances that matched none."""
    seen: dict[int, list[str]] = {number: [] for number in range(len(acceptances))}
    used: set[int] = set()
    for trace in traces:
        for check in trace.claims:
            for number, acceptance in enumerate(acceptances):
                if not acceptance.matches(trace.name, check.id):
                    continue
                seen[number].append(check.verdict)
                if check.verdict == VIOLATED:
                    used.add(number)
                    if check.accepted is None:
                        check.accepted = acceptance.reason
    unused = []
    for number, acceptance in enumerate(acceptances):
        if number in used:
            continue
        verdicts = sorted(set(seen[number]))
        why = ("no traced press makes that claim" if not verdicts
               else f"the claim is {' / '.join(verdicts)}, not violated")
        unused.append(UnusedAcceptance(acceptance, why))
    return unused


def _at_class(press: PressReport, rule: str, message: str) -> Finding:
    """A finding of the trace, on the press's class (its whole range when known: SARIF regions, annotations)."""
    return Finding(rule, Severity.ERROR, press.line, message, press.path, press=press.name, column=press.column,
                   end_line=press.end_line, end_column=press.end_column)


def claim_findings(press: PressReport) -> list[Finding]:
    """One KVA301 finding per violated, unaccepted claim of ``press``'s trace, at the class."""
    if press.trace is None:
        return []
    return [_at_class(press, CLAIM_VIOLATED, f"{press.name} departs from {check.paper}'s {check.id}: {check.message}")
            for check in press.trace.claims if check.open_violation]


def defect_findings(press: PressReport) -> list[Finding]:
    """One KVA303 finding per dynamic defect of ``press``'s trace (crash, stale-indices, batch-row-0), at the class."""
    if press.trace is None:
        return []
    return [_at_class(press, TRACE_DEFECT, f"{press.name} on the tiny model: {defect.id}: {defect.message}")
            for defect in press.trace.defects]


def unused_acceptance_findings(unused: list[UnusedAcceptance]) -> list[Finding]:
    """One KVA302 finding per unused acceptance, at its table in the configuration file."""
    return [Finding(UNUSED_ACCEPTANCE, Severity.WARNING, item.acceptance.line, item.message,
                    item.acceptance.path or "configuration") for item in unused]


def add_trace_findings(result: AuditResult, acceptances: list[Acceptance],
                       active: Callable[[str, str], bool] = lambda rule, path: True) -> list[UnusedAcceptance]:
    """After tracing (``check --trace``, ``report``): accept what the configuration accepts, then add
    KVA301 (violated claims), KVA302 (unused acceptances) and KVA303 (dynamic defects).

    ``active(rule_id, path)`` says whether a rule runs on a file (``--select``, ``--ignore``,
    ``per-path-ignores``), as for static rules. Returns the acceptances that covered nothing.
    """
    unused = apply_acceptances([p.trace for p in result.presses if p.trace is not None], acceptances)
    for press in result.presses:
        found = claim_findings(press) + defect_findings(press)
        press.findings.extend(f for f in found if active(f.rule, f.path))
    result.extra_findings.extend(f for f in unused_acceptance_findings(unused) if active(f.rule, f.path))
    result.sort()
    return unused
