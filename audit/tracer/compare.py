"""Static verdict beside dynamic check: the mapping and the disagreements (pure, no torch).

A mechanism with static evidence says what the tracer should see for each static verdict
(:meth:`kvaudit.mechanism.Mechanism.expected_observation`). For ``layer-index-reuse``:

=============  ================
static         dynamic
=============  ================
implemented    observed
partial        partial
missing        not-observed
=============  ================

Any other pair is a disagreement. A press with no dynamic check for the claim (it could not be
traced, or the check did not run) is shown as such and is not counted as a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mechanism import mechanism_by_id
from ..model import HOLDS, LAYER_INDEX_REUSE, VIOLATED, AuditResult, PressReport


@dataclass(frozen=True)
class VerdictPair:
    """Static verdict and dynamic observation of one claim of one press, and whether they agree."""

    press: str
    path: str
    claim: str
    static: str | None
    dynamic: str | None  # what the tracer saw (for layer-index-reuse: observed, partial, not-observed)
    expected: str | None = None  # what the static verdict predicts the tracer sees

    @property
    def comparable(self) -> bool:
        return self.static is not None and self.dynamic is not None and self.expected is not None

    @property
    def agrees(self) -> bool:
        return not self.comparable or self.expected == self.dynamic

    @property
    def explanation(self) -> str:
        if self.static is None:
            return "no static verdict"
        if self.dynamic is None:
            return "not traced"
        if self.agrees:
            return "agree"
        return f"DISAGREE: static {self.static} expects dynamic {self.expected}, saw {self.dynamic}"


def verdict_pair(press: PressReport, claim: str = LAYER_INDEX_REUSE) -> VerdictPair:
    mechanism = mechanism_by_id(claim)
    static = press.verdicts.get(claim)
    check = press.trace.claim(claim) if press.trace is not None else None
    dynamic = None
    if check is not None and check.verdict in (HOLDS, VIOLATED) and mechanism is not None:
        dynamic = mechanism.observation(check)
    expected = mechanism.expected_observation(static) if mechanism is not None and static is not None else None
    return VerdictPair(press.name, press.path, claim, static, dynamic, expected)


def verdict_pairs(result: AuditResult, claim: str | None = None) -> list[VerdictPair]:
    """One pair per traced press and statically judged claim (or only ``claim``)."""
    return [verdict_pair(press, c) for press in result.presses if press.trace is not None
            for c in sorted(press.verdicts) if claim is None or c == claim]


def disagreements(result: AuditResult, claim: str | None = None) -> list[VerdictPair]:
    """Presses whose static verdict and dynamic observation disagree."""
    return [pair for pair in verdict_pairs(result, claim) if not pair.agrees]
