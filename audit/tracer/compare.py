"""Static verdict beside dynamic verdict: the mapping and the disagreements (pure, no torch).

Mapping for ``layer-index-reuse`` (docs/trace.md):

=============  ================
static         dynamic
=============  ================
implemented    observed
partial        partial
missing        not-observed
=============  ================

Any other pair is a disagreement. A press with no dynamic verdict (it could not be traced) is
shown as such and is not counted as a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import (
    IMPLEMENTED,
    LAYER_INDEX_REUSE,
    MISSING,
    NOT_OBSERVED,
    OBSERVED,
    PARTIAL,
    AuditResult,
    PressReport,
)

STATIC_TO_DYNAMIC: dict[str, str] = {IMPLEMENTED: OBSERVED, PARTIAL: PARTIAL, MISSING: NOT_OBSERVED}


@dataclass(frozen=True)
class VerdictPair:
    """Static and dynamic verdicts of one claim of one press, and whether they agree."""

    press: str
    path: str
    claim: str
    static: str | None
    dynamic: str | None

    @property
    def comparable(self) -> bool:
        return self.static is not None and self.dynamic is not None

    @property
    def agrees(self) -> bool:
        return not self.comparable or STATIC_TO_DYNAMIC.get(self.static or "") == self.dynamic

    @property
    def explanation(self) -> str:
        if self.static is None:
            return "no static verdict"
        if self.dynamic is None:
            return "not traced"
        if self.agrees:
            return "agree"
        expected = STATIC_TO_DYNAMIC.get(self.static, "?")
        return f"DISAGREE: static {self.static} expects dynamic {expected}, saw {self.dynamic}"


def verdict_pair(press: PressReport, claim: str = LAYER_INDEX_REUSE) -> VerdictPair:
    trace = press.trace
    dynamic = trace.verdicts.get(claim) if trace is not None else None
    return VerdictPair(press.name, press.path, claim, press.verdicts.get(claim), dynamic)


def verdict_pairs(result: AuditResult, claim: str = LAYER_INDEX_REUSE) -> list[VerdictPair]:
    """One pair per press that has a trace attached."""
    return [verdict_pair(press, claim) for press in result.presses if press.trace is not None]


def disagreements(result: AuditResult, claim: str = LAYER_INDEX_REUSE) -> list[VerdictPair]:
    """Presses whose static and dynamic verdicts disagree under :data:`STATIC_TO_DYNAMIC`."""
    return [pair for pair in verdict_pairs(result, claim) if not pair.agrees]
